"""`taskrouter eval` and `taskrouter eval compare` (docs/evaluation.md).

    taskrouter eval --dataset FILE.jsonl|- --target local|URL --out DIR [--api-key K] [--tasks FILE]
                    [--strategy S] [--concurrency N] [--turn-timeout SECONDS] [--no-progress]
    taskrouter eval compare DIR... [--out FILE|-] [--gate BASELINE_DIR] [--tolerance T]
    taskrouter eval threshold DIR (--accuracy A | --max-escalated S) [--adapter NAME|DIR] [--stage STAGE]
                              [--strategy S] [--level L]

Errors are one line on stderr naming the flag or file to fix: exit 2 for the command line itself, for
a run where no turn got an HTTP answer (nothing was measured), and for a threshold the run cannot
support; 1 for the others.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from taskrouter.arguments import OneLineParser, positive_int, positive_seconds, share_strictly_between_0_and_1
from taskrouter.core.request import Strategy

STDIO = "-"  # standard input (--dataset) or output (compare --out)
NO_ANSWER_EXIT = 2  # no turn got an HTTP answer: the target, not the router, was measured
REFUSED_EXIT = 2  # eval threshold: the run cannot support the threshold asked for


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["compare"]:
            return _compare(_compare_parser().parse_args(argv[1:]))
        if argv[:1] == ["threshold"]:
            return _threshold(_threshold_parser().parse_args(argv[1:]))
        return _evaluate(_eval_parser().parse_args(argv))
    except SystemExit as done:  # --help (0), or a usage error already printed on one line (2)
        return done.code if isinstance(done.code, int) else 0


def _evaluate(args: argparse.Namespace) -> int:
    from taskrouter.evaluation.dataset import DatasetError
    from taskrouter.evaluation.runner import evaluate, prepare_output, read_dataset
    from taskrouter.evaluation.targets import ApiTarget, LocalTarget

    out = Path(args.out)
    try:
        dataset = read_dataset(*_dataset_bytes(args.dataset))
        try:
            prepare_output(out)
        except OSError as error:
            raise ValueError(f"--out {out}: {error.strerror or error}: give a folder that can be written") from None
        if args.target == "local":
            target = LocalTarget(Path(args.tasks) if args.tasks else None, args.concurrency, args.turn_timeout)
        elif args.tasks:
            raise ValueError("--tasks is for --target local: a running API has its own registry")
        else:
            target = ApiTarget(args.target, args.api_key, args.turn_timeout)
        started = time.perf_counter()
        report = evaluate(
            dataset, target, args.target, out, strategy=args.strategy, concurrency=args.concurrency,
            turn_timeout_s=args.turn_timeout, progress=not args.no_progress,
            warn=lambda line: print(f"taskrouter eval: warning: {line}", file=sys.stderr, flush=True),
        )  # fmt: skip
    except (DatasetError, ValueError, OSError) as error:
        print(f"taskrouter eval: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # botocore's (no region, no credentials) and the like: one line, no traceback
        print(f"taskrouter eval: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    turns, metrics = report["turns"], report["metrics"]
    if not any(turn["status"] for turn in turns):
        print(
            f"taskrouter eval: no turn got an HTTP answer from {args.target} (first: {turns[0]['error']}): is it "
            f"running there, within --turn-timeout {args.turn_timeout:g} s? Report in {out}",
            file=sys.stderr,
        )
        return NO_ANSWER_EXIT
    print(
        f"{len(turns)} turns in {time.perf_counter() - started:.1f} s: event accuracy "
        f"{metrics['event']['accuracy']:.3f}, task accuracy {metrics['task']['accuracy']:.3f}, fallback rate "
        f"{metrics['fallback_rate']:.3f}, error rate {metrics['error_rate']:.3f}; report in {out}"
    )
    return 0


def _dataset_bytes(dataset: str) -> tuple[bytes, str]:
    """The dataset's bytes and the name errors and the report give it."""
    if dataset == STDIO:
        return sys.stdin.buffer.read(), "standard input"
    try:
        return Path(dataset).read_bytes(), Path(dataset).name
    except OSError as error:
        raise ValueError(f"--dataset {dataset}: {error.strerror or error}") from None


def _compare(args: argparse.Namespace) -> int:
    from taskrouter.evaluation.compare import gate, load_row, table
    from taskrouter.evaluation.files import write_atomically

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        print(f"taskrouter eval compare: --tolerance {args.tolerance}: give a finite number, 0 or more (default 0.01)",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        rows = [load_row(Path(run)) for run in args.runs]
        baseline = load_row(Path(args.gate)) if args.gate else None
    except ValueError as error:
        print(f"taskrouter eval compare: {error}", file=sys.stderr)
        return 1
    text = table(rows)
    print(text, end="")  # standard output always; --out - asks for nothing more
    if args.out and args.out != STDIO:
        try:
            write_atomically(Path(args.out), text)
        except OSError as error:
            print(f"taskrouter eval compare: --out {args.out}: {error.strerror or error}", file=sys.stderr)
            return 1
    if baseline is not None:
        failures = gate(rows, baseline, args.tolerance)
        for failure in failures:
            print(f"gate: {failure}", file=sys.stderr)
        if failures:
            return 1
    return 0


def _threshold(args: argparse.Namespace) -> int:
    from taskrouter.evaluation import threshold as chosen

    def refuse(message: object, code: int) -> int:
        print(f"taskrouter eval threshold: {message}", file=sys.stderr)
        return code

    try:
        run = chosen.read_run(Path(args.run))
        strategy = chosen.strategy_of(run, args.strategy)
        tasks_sha256 = chosen.tasks_digest_of(run)
        adapter = chosen.adapter_of(args.adapter, run)
        if args.accuracy is not None:
            choice = chosen.for_accuracy(run, args.accuracy, args.level)
        else:
            choice = chosen.for_escalated_share(run, args.max_escalated, args.level)
    except chosen.Refused as refusal:
        return refuse(refusal, REFUSED_EXIT)
    except ValueError as error:
        return refuse(error, 1)
    entry = chosen.threshold_entry(strategy, adapter, choice.threshold, tasks_sha256)
    lines = [
        *chosen.summary_lines(run, choice, strategy, adapter, tasks_sha256, args.level),
        "",
        f"infra/stages.toml, in [{args.stage}.confidence] (its thresholds hold one entry per strategy and adapter):",
        *chosen.stages_toml_lines(entry),
        "",
        "make local:",
        chosen.environment_line(entry),
    ]
    print("\n".join(lines))
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="taskrouter eval", description="replay a labelled dataset through a router")
    parser.add_argument("--dataset", required=True, help="labelled conversations, one JSON object a line (-: standard input)")
    parser.add_argument("--target", required=True, type=_target, help="local (this process, from the environment) or a base URL")
    parser.add_argument("--out", required=True, type=_folder, help="folder for report.json, report.md and the PNGs")
    parser.add_argument("--api-key", default=os.environ.get("TASKROUTER_API_KEY"), help="the URL target's API key")
    parser.add_argument("--tasks", help="--target local: a task file to use as the registry")
    parser.add_argument("--strategy", choices=[s.value for s in Strategy], help="sent with every turn")
    parser.add_argument("--concurrency", type=positive_int, default=1, help="turns in flight at once")
    parser.add_argument("--turn-timeout", type=positive_seconds, default=15.0, metavar="SECONDS",
                        help="each turn's deadline, however the target trickles (default 15)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _compare_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="taskrouter eval compare", description="evaluations side by side")
    parser.add_argument("runs", nargs="+", metavar="DIR", help="folders written by taskrouter eval")
    parser.add_argument("--out", help="also write the table, as Markdown, to this file (-: standard output only)")
    parser.add_argument("--gate", metavar="BASELINE_DIR", help="exit 1 if a run regresses from this one")
    parser.add_argument("--tolerance", type=float, default=0.01, help="the regression allowed (default 0.01)")
    return parser


def _threshold_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="taskrouter eval threshold", description="the confidence threshold a run supports")
    parser.add_argument("run", metavar="DIR", help="a folder written by taskrouter eval, over a reviewed dataset training never saw")
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument("--accuracy", type=share_strictly_between_0_and_1, metavar="A", help="the accuracy the kept turns must reach (its Wilson lower bound)")
    goal.add_argument("--max-escalated", type=share_strictly_between_0_and_1, metavar="S", help="the largest share of answered turns to escalate")
    parser.add_argument("--adapter", default="base", metavar="NAME|DIR",
                        help="the router's adapter (default base), or a folder holding its manifest.json")  # fmt: skip
    parser.add_argument("--stage", default="dev", type=_stage, help="the stage whose configuration lines to print (default dev)")
    parser.add_argument("--strategy", choices=[s.value for s in Strategy], help="the run's strategy, when it sent none")
    parser.add_argument("--level", type=share_strictly_between_0_and_1, default=0.95, metavar="L", help="the Wilson intervals' level (default 0.95)")
    return parser


def _stage(value: str) -> str:
    from taskrouter.evaluation.threshold import STAGE_NAME

    if not STAGE_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: give a stage's name as infra/stages.toml has it, e.g. dev")
    return value


def _target(value: str) -> str:
    if value == "local" or value.lower().startswith(("http://", "https://")):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: give local or an http(s) URL, e.g. http://127.0.0.1:8080")


def _folder(value: str) -> str:
    if value == STDIO:
        raise argparse.ArgumentTypeError("a folder (report.json, report.md, the PNGs), not standard output")
    return value
