"""`taskrouter eval` and `taskrouter eval compare` (CONTRACT section 4).

    taskrouter eval --dataset FILE.jsonl --target local|URL --out DIR [--api-key K] [--tasks FILE]
                    [--strategy S] [--concurrency N]
    taskrouter eval compare DIR... [--out FILE] [--gate BASELINE_DIR] [--tolerance T]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from taskrouter.core.request import Strategy


def main(argv: list[str]) -> int:
    if argv[:1] == ["compare"]:
        return _compare(_compare_parser().parse_args(argv[1:]))
    args = _eval_parser().parse_args(argv)
    from taskrouter.evaluation.dataset import DatasetError
    from taskrouter.evaluation.runner import evaluate
    from taskrouter.evaluation.targets import ApiTarget, LocalTarget

    try:
        if args.target == "local":
            target = LocalTarget(Path(args.tasks) if args.tasks else None, concurrency=args.concurrency)
        elif args.target.startswith(("http://", "https://")):
            if args.tasks:
                raise ValueError("--tasks is for --target local: a running API has its own registry")
            target = ApiTarget(args.target, args.api_key)
        else:
            raise ValueError(f"--target must be local or an http(s) URL, not {args.target!r}")
        started = time.perf_counter()
        report = evaluate(
            Path(args.dataset), target, args.target, Path(args.out),
            strategy=args.strategy, concurrency=args.concurrency, progress=not args.no_progress,
        )
    except (DatasetError, ValueError, OSError) as error:
        print(f"taskrouter eval: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # botocore's (no region, no credentials) and the like: one line, no traceback
        print(f"taskrouter eval: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    metrics = report["metrics"]
    print(
        f"{len(report['turns'])} turns in {time.perf_counter() - started:.1f} s: event accuracy "
        f"{metrics['event']['accuracy']:.3f}, task accuracy {metrics['task']['accuracy']:.3f}, fallback rate "
        f"{metrics['fallback_rate']:.3f}, error rate {metrics['error_rate']:.3f}; report in {args.out}"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from taskrouter.evaluation.compare import gate, load_row, table

    try:
        rows = [load_row(Path(run)) for run in args.runs]
        baseline = load_row(Path(args.gate)) if args.gate else None
    except ValueError as error:
        print(f"taskrouter eval compare: {error}", file=sys.stderr)
        return 1
    text = table(rows)
    print(text, end="")
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as error:
            print(f"taskrouter eval compare: {error}", file=sys.stderr)
            return 1
    if baseline is not None:
        failures = gate(rows, baseline, args.tolerance)
        for failure in failures:
            print(f"gate: {failure}", file=sys.stderr)
        if failures:
            return 1
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter eval", description="replay a labelled dataset through a router")
    parser.add_argument("--dataset", required=True, help="labelled conversations, one JSON object a line")
    parser.add_argument("--target", required=True, help="local (this process, from the environment) or a base URL")
    parser.add_argument("--out", required=True, help="folder for report.json, report.md and the PNGs")
    parser.add_argument("--api-key", default=os.environ.get("TASKROUTER_API_KEY"), help="the URL target's API key")
    parser.add_argument("--tasks", help="--target local: a task file to use as the registry")
    parser.add_argument("--strategy", choices=[s.value for s in Strategy], help="sent with every turn")
    parser.add_argument("--concurrency", type=positive_int, default=1, help="turns in flight at once")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter eval compare", description="evaluations side by side")
    parser.add_argument("runs", nargs="+", metavar="DIR", help="folders written by taskrouter eval")
    parser.add_argument("--out", help="also write the table, as Markdown, to this file")
    parser.add_argument("--gate", metavar="BASELINE_DIR", help="exit 1 if a run regresses from this one")
    parser.add_argument("--tolerance", type=float, default=0.01, help="the regression allowed (default 0.01)")
    return parser


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number
