"""Peak memory and step time of `taskrouter adapter train` on a real base, with the loss computed from
the full logits (every prompt position, the model's own `model(**batch).loss`: how training ran
before) and from the answer positions alone (`train.answer_loss`, how it runs now).

    .venv/bin/python benchmarks/training_step.py [--model GGUF|DIR] [--batch-sizes 1 4] [--steps 3]

Default model: SmolLM2-135M-Instruct, the GGUF that set-up installs (`taskrouter model path`).
Prompts: the router's, over tasks/default_tasks.json and datasets/example.jsonl; the same seed, so both losses train on the same batches. Each case runs the
real training function in a fresh process, whose peak resident memory (`ru_maxrss`: torch allocates
outside tracemalloc's sight) is the figure; the peak once the base is loaded, before the first step,
is shown beside it. Validation is skipped (forward only: it never sets the peak). Figures only: nothing
here asserts. A step's wall time (its forward, backward and optimizer step) depends on what else the
machine runs; its CPU time (all of the process's threads, OpenMP's idle ones asleep) much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taskrouter.model_server.bundled import smollm2_gguf  # noqa: E402

DATASET = ROOT / "datasets" / "example.jsonl"
TASKS_FILE = ROOT / "tasks" / "default_tasks.json"
LOSSES = ("full", "answer")  # before, after
# OpenMP's idle threads sleep instead of spinning: on a machine shared with other work, spinning
# threads make both clocks measure the neighbours (docs/local-model.md; the model server does the same).
QUIET_THREADS = {"OMP_WAIT_POLICY": "PASSIVE"}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(model: str, loss: str, batch_size: int, steps: int) -> dict[str, Any]:
    """One case, in this process (a fresh one: the parent starts one a case)."""
    from taskrouter.core.task_spec import load_task_file
    from taskrouter.training import train

    chosen = train.answer_loss if loss == "answer" else (lambda wrapped, batch: wrapped(**batch).loss)
    figures: dict[str, Any] = {"loss": loss, "batch_size": batch_size}
    figures.update({key: [] for key in ("widths", "seconds", "cpu", "losses")})
    started: list[tuple[float, float]] = []  # wall and CPU clocks as a step's forward starts

    def timed(wrapped: Any, batch: dict[str, Any]) -> Any:
        figures.setdefault("loaded_peak_mib", peak_rss_mib())  # the base and its adapter, before any step
        figures["widths"].append(int(batch["input_ids"].shape[1]))
        started.append((time.perf_counter(), time.process_time()))
        return chosen(wrapped, batch)

    def log(line: str) -> None:  # "epoch E step S: loss L", once the optimizer has stepped
        if " step " in line:
            figures["seconds"].append(time.perf_counter() - started[-1][0])
            figures["cpu"].append(time.process_time() - started[-1][1])
            figures["losses"].append(float(line.rsplit(" ", 1)[1]))

    train.answer_loss = timed
    train._mean_loss = lambda *_args: None
    with tempfile.TemporaryDirectory() as out:
        train.train(
            DATASET, load_task_file(TASKS_FILE, updated_at=""), model, Path(out) / "adapter",
            train.HyperParameters(epochs=1, max_steps=steps, batch_size=batch_size, learning_rate=1e-3),
            archive=False, log=log,
        )
    figures["peak_mib"] = peak_rss_mib()
    return figures


def run(model: str, batch_sizes: list[int], steps: int) -> None:
    import torch

    print(f"model {model}; {steps} steps a case; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| batch | loss | prompt widths (tokens) | peak RSS | of which the loaded base | s/step, wall (each) "
          "| CPU s/step | losses |")
    print("|---|---|---|---|---|---|---|---|")
    for batch_size in batch_sizes:
        for loss in LOSSES:
            child = subprocess.run(
                [sys.executable, __file__, "--model", model, "--steps", str(steps), "--case", loss, str(batch_size)],
                capture_output=True, text=True, check=True, env={**os.environ, **QUIET_THREADS},
            )
            f = json.loads(child.stdout.strip().splitlines()[-1])
            wall, cpu = (sum(f[k]) / len(f[k]) for k in ("seconds", "cpu"))
            each = ", ".join(f"{s:.1f}" for s in f["seconds"])
            print(f"| {batch_size} | {loss} | {', '.join(map(str, f['widths']))} | {f['peak_mib'] / 1024:.2f} GiB "
                  f"| {f['loaded_peak_mib'] / 1024:.2f} GiB | {wall:.1f} ({each}) | {cpu:.1f} "
                  f"| {', '.join(f'{x:.4f}' for x in f['losses'])} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a GGUF file or a model folder (default: `taskrouter model path`)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--case", nargs=2, metavar=("LOSS", "BATCH"), help=argparse.SUPPRESS)  # a child's one case
    args = parser.parse_args()
    model = args.model or str(smollm2_gguf())
    if args.case:
        print(json.dumps(measure(model, args.case[0], int(args.case[1]), args.steps)))
    else:
        run(model, args.batch_sizes, args.steps)


if __name__ == "__main__":
    main()
