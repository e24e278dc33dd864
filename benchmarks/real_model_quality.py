"""Routing quality of a real base model, zero-shot and with an adapter trained here, measured through
the local model server as the primary: train -> serve -> evaluate -> compare, on real weights.

    .venv/bin/python benchmarks/real_model_quality.py [--model DIR|GGUF] [--dataset FILE] [--tasks FILE]
        [--held-out-share 0.3] [--max-steps 20] [--batch-size 4] [--learning-rate 1e-3]
        [--strategies zero_shot few_shot_cot react] [--adapter DIR] [--work DIR]

1. Split: a conversation is held out when int(sha256(id)) % 100 < share x 100, the same on every run
   and machine; its turns stay together. The rest is the training set.
2. Train: `taskrouter adapter train` on the rest (which holds out its own validation share), bounded by
   --max-steps; or --adapter, an adapter already trained (on a split that held these turns out).
3. Serve: `make local`'s model server (TASKROUTER_LOCAL_MODEL, TASKROUTER_LOCAL_ADAPTERS): the base,
   and the adapter as the inference component `router`, on a loopback port, loaded once.
4. Evaluate: `taskrouter eval --target local --tasks` on the held-out turns, for each strategy, the base
   (no component) and the adapter (TASKROUTER_SAGEMAKER_COMPONENT=router). The fallback is a stub that
   answers `none` so that every turn says why the primary did not decide; its answers are never
   counted: the figures are the primary's alone, a turn it did not decide (invalid output, timeout)
   a miss, told by its reason.

Default model: SmolLM2-135M-Instruct (the GGUF that set-up installs, `taskrouter model path`); given
a Qwen2.5-1.5B folder, the same run measures it (on a CPU, a turn the server takes over make local's
10 s primary timeout counts as a timeout miss). The 135M's figures are not the 1.5B's. Figures only:
nothing here asserts. Reports stay in --work (default: a temporary folder), for `taskrouter eval compare`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.training_step import QUIET_THREADS  # noqa: E402
from taskrouter.cli import main as taskrouter  # noqa: E402
from taskrouter.core.tasks import NO_TASK  # noqa: E402
from taskrouter.model_server.bundled import smollm2_gguf  # noqa: E402
from taskrouter.evaluation.metrics import latency_summary  # noqa: E402
from tests.integration.servers import OpenAIDouble  # noqa: E402

COMPONENT = "router"  # the adapter's inference component on the local model server
STRATEGIES = ("zero_shot", "few_shot_cot", "react")
# What the run's router must not take from the caller's environment: its registry is the task file,
# its primary the local server, its fallback the stub.
CLEARED = ("TASKROUTER_TABLE_NAME", "TASKROUTER_SAGEMAKER_COMPONENT", "TASKROUTER_SAGEMAKER_ENDPOINT",
           "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "TASKROUTER_OPENAI_SECRET_ARN", "AWS_PROFILE")


def split(dataset: Path, share: float, work: Path) -> tuple[Path, Path, int, int]:
    """The training and held-out files, whole lines, by conversation id; and their conversation counts."""
    train, held_out = work / "train.jsonl", work / "held_out.jsonl"
    kept: dict[Path, list[str]] = {train: [], held_out: []}
    for line in dataset.read_text().splitlines():
        if line.strip():
            digest = int(hashlib.sha256(json.loads(line)["id"].encode()).hexdigest(), 16)
            kept[held_out if digest % 100 < share * 100 else train].append(line)
    for file, lines in kept.items():
        file.write_text("".join(f"{line}\n" for line in lines))
    return train, held_out, len(kept[train]), len(kept[held_out])


def train_adapter(model: str, dataset: Path, tasks: Path, out: Path, args: argparse.Namespace) -> float:
    """`taskrouter adapter train` in a process of its own (its memory goes with it); its seconds."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "taskrouter.cli", "adapter", "train", "--dataset", str(dataset), "--tasks", str(tasks),
         "--base-model", model, "--out", str(out), "--max-steps", str(args.max_steps), "--epochs", str(args.epochs),
         "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate), "--force"],
        check=True, env={**os.environ, **QUIET_THREADS},
    )
    return time.monotonic() - started


def primary_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The primary's own figures over every turn: a turn the fallback decided is a miss."""
    turns = report["turns"]
    decided = [t for t in turns if t["status"] == 200 and t["backend"] == "sagemaker"]
    by_primary = {id(t) for t in decided}

    def task(side: dict[str, Any]) -> str:
        return side["task"] or NO_TASK

    expected_none = [t for t in turns if task(t["expected"]) == NO_TASK]
    said_none = [t for t in decided if task(t["predicted"]) == NO_TASK]
    latency = latency_summary([t["latency_ms"] for t in decided])
    reasons: dict[str, int] = {}
    for t in turns:
        if id(t) not in by_primary:
            reason = t["fallback_reason"] or f"status {t['status']}"
            reasons[reason] = reasons.get(reason, 0) + 1

    def share(part: list, whole: list) -> float | None:
        return len(part) / len(whole) if whole else None

    return {
        "turns": len(turns),
        "task_accuracy": share([t for t in decided if task(t["predicted"]) == task(t["expected"])], turns),
        "event_accuracy": share([t for t in decided if t["predicted"]["event"] == t["expected"]["event"]], turns),
        "none_recall": share([t for t in expected_none if id(t) in by_primary and task(t["predicted"]) == NO_TASK],
                             expected_none),
        "none_precision": share([t for t in said_none if task(t["expected"]) == NO_TASK], said_none),
        "invalid_outputs": reasons.pop("invalid_output", 0),
        "other_misses": reasons,
        "p50_ms": latency["p50"] if decided else None,
        "p90_ms": latency["p90"] if decided else None,
    }


def evaluate(held_out: Path, tasks: Path, strategy: str, component: str | None, out: Path) -> tuple[dict, float]:
    if component:
        os.environ["TASKROUTER_SAGEMAKER_COMPONENT"] = component
    else:
        os.environ.pop("TASKROUTER_SAGEMAKER_COMPONENT", None)
    started = time.monotonic()
    code = taskrouter(["eval", "--dataset", str(held_out), "--target", "local", "--tasks", str(tasks),
                       "--out", str(out), "--strategy", strategy, "--no-progress"])
    if code != 0:
        raise SystemExit(f"taskrouter eval exited {code} ({strategy}, {component or 'base'}): see above")
    return json.loads((out / "report.json").read_text()), time.monotonic() - started


def figure(value: float | None, scale: float = 1, digits: int = 2) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def run(args: argparse.Namespace, work: Path) -> None:
    from taskrouter.model_server.local import ADAPTERS, MODEL, start_local_model

    begun = time.monotonic()
    model = args.model or str(smollm2_gguf())
    train, held_out, trained_on, held = split(args.dataset, args.held_out_share, work)
    print(f"split of {args.dataset.name}: {trained_on} conversations to train on, {held} held out "
          f"({sum(1 for _ in held_out.open())} lines)", flush=True)
    adapter, trained_s = args.adapter, 0.0
    if adapter is None:
        adapter = work / "adapter"
        trained_s = train_adapter(model, train, args.tasks, adapter, args)
        print(f"trained {adapter} in {trained_s:.0f} s", flush=True)

    stub = OpenAIDouble()
    stub.always(stub.answer(None))
    for name in CLEARED:
        os.environ.pop(name, None)
    os.environ.update({
        MODEL: model, ADAPTERS: f"{COMPONENT}={adapter}", "AWS_DEFAULT_REGION": "us-east-1",
        "OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "sk-stub", "NO_PROXY": "127.0.0.1",
        "TASKROUTER_BREAKER_FAILURES": "1000",  # every turn asks the primary, however many it failed
    })
    served = time.monotonic()
    server = start_local_model(os.environ)  # with make local's settings for it: 10 s timeouts, no hedge
    rows, evaluated_s = [], 0.0
    try:
        server.wait_ready()
        print(f"model server ready in {time.monotonic() - served:.0f} s", flush=True)
        for strategy in args.strategies:
            for variant, component in (("base", None), ("adapter", COMPONENT)):
                out = work / f"eval-{variant}-{strategy}"
                report, seconds = evaluate(held_out, args.tasks, strategy, component, out)
                evaluated_s += seconds
                rows.append((strategy, variant, primary_figures(report), seconds))
    finally:
        server.stop()
        stub.close()

    print(f"\n{model}; held out: {rows[0][2]['turns'] if rows else 0} turns of {held} conversations "
          f"(--held-out-share {args.held_out_share}); adapter: {adapter}")
    print("| strategy | model | task acc. | event acc. | NONE recall | NONE precision | invalid outputs "
          "| other misses | p50 / p90 ms | eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for strategy, variant, f, seconds in rows:
        others = ", ".join(f"{n} {reason}" for reason, n in sorted(f["other_misses"].items())) or "0"
        print(f"| {strategy} | {variant} | {figure(f['task_accuracy'])} | {figure(f['event_accuracy'])} "
              f"| {figure(f['none_recall'])} | {figure(f['none_precision'])} | {f['invalid_outputs']} | {others} "
              f"| {figure(f['p50_ms'], digits=0)} / {figure(f['p90_ms'], digits=0)} | {seconds:.0f} |")
    training = f"training {trained_s:.0f} s" if args.adapter is None else "no training (--adapter)"
    print(f"\n{training}, evaluation {evaluated_s:.0f} s, in all {time.monotonic() - begun:.0f} s (reports in {work})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder or GGUF file (default: `taskrouter model path`)")
    parser.add_argument("--dataset", type=Path, default=ROOT / "datasets" / "example.jsonl")
    parser.add_argument("--tasks", type=Path, default=ROOT / "tasks" / "default_tasks.json")
    parser.add_argument("--held-out-share", type=float, default=0.3, help="of the conversations, by id (default 0.3)")
    parser.add_argument("--max-steps", type=int, default=20, help="training steps (default 20: bounded on a CPU)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=["zero_shot"])
    parser.add_argument("--adapter", type=Path, help="an adapter already trained on this split: no training")
    parser.add_argument("--work", type=Path,
                        help="where the split, the adapter and the reports go (default: a temporary folder)")
    args = parser.parse_args()
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        run(args, args.work)
    else:
        with tempfile.TemporaryDirectory() as work:
            run(args, Path(work))


if __name__ == "__main__":
    main()
