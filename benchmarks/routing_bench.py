"""SmolLM2 on the routing benchmark (docs/benchmark.md): zero-shot and through each strategy, adapters
trained on balanced subsets of the train split (a learning curve), each run's report committed, and
the tables docs/benchmark.md shows built from the committed reports alone.

    .venv/bin/python benchmarks/routing_bench.py eval --name base-zero_shot [--strategy zero_shot] [--adapter DIR] [--split test]
    .venv/bin/python benchmarks/routing_bench.py train --size 100 --seed 0     # resumable: run it again after a stop
    .venv/bin/python benchmarks/routing_bench.py train --size 50 --learning-rate 2e-4    # lora-50-s0-lr0.0002
    .venv/bin/python benchmarks/routing_bench.py eval --name lora-100-s0 --adapter benchmarks/work/adapters/lora-100-s0
    .venv/bin/python benchmarks/routing_bench.py table [--write]                 # --write: into docs/benchmark.md

- eval: make local's model server (SmolLM2-135M-Instruct's GGUF, `taskrouter model path`; the adapter
  as the inference component `router`), `taskrouter eval --target local` over the split with the
  benchmark's task file; the fallback is a stub answering `none`, never counted: a turn the primary did
  not decide (invalid output, timeout) is a miss, told by its reason. The report goes to
  benchmarks/results/bench/<name>/<split>/ with run.json (command, model, adapter manifest digest,
  seconds, date). A run whose report exists is skipped: a stopped series resumes where it stopped.
- train: a subset of the train split's turns balanced across the five events (the same number of each,
  nested: the 50 are the first of the 100), as single-turn lines, trained on by `taskrouter adapter
  train` with a checkpoint every few steps (--checkpoint-dir): a stopped run resumes from it.
- table: task and event accuracy with 95 % intervals bootstrapped by conversation, recall of each
  expected event, per registry, language, near-miss conversations and the held-out registry, latency;
  each adapter against the base zero-shot on the same turns (paired).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_data  # noqa: E402
from taskrouter.core.request import Strategy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "bench"
WORK = ROOT / "benchmarks" / "work"  # adapters and checkpoints: large, not committed
TASKS = bench_data.BENCH / "tasks.json"
COMPONENT = "router"
EVENTS = bench_data.EVENTS
TABLE_BEGIN = "<!-- routing_bench.py table: the block below is checked by a test -->"
TABLE_END = "<!-- end of the results block -->"
BOOTSTRAP_DRAWS = 1000
# Batch 1: at 4, prompts of the 40-task registry (~2,500 tokens) took 22.6 GB and were killed (24 GB
# here); at 2, 18-20 GB, killed whenever anything else ran beside it.
HYPER = {"epochs": 2, "batch_size": 1, "learning_rate": 1e-3, "rank": 16}


# -- training sets ---------------------------------------------------------------------------------
def balanced_turns(size: int, seed: int) -> list[dict[str, Any]]:
    """`size` turns of the train split, as single-turn lines, the same number of each event (as far as
    each event has turns), in an order fixed by `seed`; nested: a smaller size is a prefix per event."""
    by_event: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for conversation in bench_data.read_jsonl(bench_data.BENCH / "train.jsonl"):
        running = None
        for index, message in bench_data.user_turns(conversation["messages"]):
            by_event[message["expect"]["event"]].append(single_turn(conversation, index, running))
            running = message["expect"]["task"]
    order = random.Random(seed)
    for turns in by_event.values():
        order.shuffle(turns)
    chosen, share = [], size // len(EVENTS)
    for event in EVENTS:
        chosen += by_event[event][:share]
    leftover = [turn for event in EVENTS for turn in by_event[event][share:]]
    order.shuffle(leftover)
    chosen += leftover[: size - len(chosen)]
    order.shuffle(chosen)
    return chosen


def single_turn(conversation: dict[str, Any], index: int, running: str | None) -> dict[str, Any]:
    """One routed turn in the dataset's single-turn form: the conversation up to it, the running task,
    the label and allow-list on its last user message only."""
    messages = []
    for position, message in enumerate(conversation["messages"][: index + 1]):
        shaped = {"role": message["role"], "content": message["content"]}
        if position == index:
            shaped |= {"tasks": message["tasks"], "expect": message["expect"]}
        messages.append(shaped)
    return {"id": f"{conversation['id']}#{index}", "current_task": running, "messages": messages}


def adapter_name(size: int, seed: int, learning_rate: float = HYPER["learning_rate"]) -> str:
    """lora-SIZE-sSEED, with the learning rate named where it is not the benchmark's."""
    return f"lora-{size}-s{seed}" + ("" if learning_rate == HYPER["learning_rate"] else f"-lr{learning_rate:g}")


def train(size: int, seed: int, learning_rate: float = HYPER["learning_rate"]) -> Path:
    from taskrouter.model_server.bundled import smollm2_gguf

    name = adapter_name(size, seed, learning_rate)
    adapter, checkpoints = WORK / "adapters" / name, WORK / "checkpoints" / name
    dataset = WORK / "train-sets" / f"{name}.jsonl"
    bench_data.write_jsonl(dataset, balanced_turns(size, seed))
    if (adapter / "manifest.json").is_file():
        print(f"{adapter} is trained already", flush=True)
        return adapter
    command = [sys.executable, "-m", "taskrouter.cli", "adapter", "train", "--dataset", str(dataset),
               "--tasks", str(TASKS), "--base-model", str(smollm2_gguf()), "--out", str(adapter),
               "--epochs", str(HYPER["epochs"]), "--batch-size", str(HYPER["batch_size"]),
               "--learning-rate", str(learning_rate), "--rank", str(HYPER["rank"]), "--seed", str(seed),
               "--checkpoint-dir", str(checkpoints), "--checkpoint-every", "2", "--force"]
    started = time.monotonic()
    subprocess.run(command, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    trained = {"command": " ".join(command[1:]), "seconds_this_session": round(time.monotonic() - started),
               "training_set_sha256": hashlib.sha256(dataset.read_bytes()).hexdigest(), "size": size, "seed": seed}
    (adapter / "bench-training.json").write_text(json.dumps(trained, indent=1) + "\n")
    return adapter


def adapter_facts(adapter: Path) -> dict[str, Any]:
    """What a run's report keeps of the adapter it evaluated: its manifest's digest, how the benchmark
    trained it, and what `adapter train` recorded (examples trained on and held out, steps, losses)."""
    manifest_file = adapter / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    training = adapter / "bench-training.json"
    return {
        "manifest_sha256": bench_data.file_sha256(manifest_file),
        "training": json.loads(training.read_text()) if training.is_file() else None,
        "examples": manifest.get("dataset"), "split": manifest.get("split"), "result": manifest.get("result"),
        "hyper_parameters": manifest.get("hyper_parameters"),
    }  # fmt: skip


# -- evaluation ------------------------------------------------------------------------------------
def evaluate(name: str, split: str, strategy: str, adapter: Path | None) -> None:
    from benchmarks.real_model_quality import CLEARED
    from taskrouter.cli import main as taskrouter
    from taskrouter.model_server.bundled import smollm2_gguf
    from taskrouter.model_server.local import ADAPTERS, MODEL, start_local_model
    from tests.integration.servers import OpenAIDouble

    out = RESULTS / name / split
    if (out / "report.json").is_file():
        print(f"{out} exists: skipped", flush=True)
        return
    stub = OpenAIDouble()
    stub.always(stub.answer(None))
    for variable in CLEARED:
        os.environ.pop(variable, None)
    model = smollm2_gguf()
    os.environ.update({
        MODEL: str(model), "AWS_DEFAULT_REGION": "us-east-1", "OPENAI_BASE_URL": stub.base_url,
        "OPENAI_API_KEY": "sk-stub", "NO_PROXY": "127.0.0.1", "TASKROUTER_BREAKER_FAILURES": "1000",
        "OMP_WAIT_POLICY": "PASSIVE",
    })  # fmt: skip
    if adapter is not None:
        os.environ[ADAPTERS] = f"{COMPONENT}={adapter}"
        os.environ["TASKROUTER_SAGEMAKER_COMPONENT"] = COMPONENT
    server = start_local_model(os.environ)
    arguments = ["eval", "--dataset", str(bench_data.BENCH / f"{split}.jsonl"), "--target", "local",
                 "--tasks", str(TASKS), "--out", str(out), "--strategy", strategy, "--no-progress"]
    try:
        server.wait_ready()
        started = time.monotonic()
        code = taskrouter(arguments)
        seconds = time.monotonic() - started
    finally:
        server.stop()
        stub.close()
    if code != 0:
        raise SystemExit(f"taskrouter eval exited {code}")
    for picture in out.glob("*.png"):
        picture.unlink()  # report.json holds every figure; the pictures are not committed
    run = {
        "name": name, "split": split, "strategy": strategy, "decider": "sagemaker",
        "model": model.name, "model_sha256": bench_data.file_sha256(model),
        "adapter": None if adapter is None else adapter_facts(adapter),
        "command": "taskrouter " + " ".join(arguments[:-1]).replace(str(ROOT) + "/", ""),
        "seconds": round(seconds), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }  # fmt: skip
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")


# -- the table -------------------------------------------------------------------------------------
STRATEGIES = tuple(strategy.value for strategy in Strategy)  # the order the table reads them in


def load_runs(split: str = "test") -> dict[str, dict[str, Any]]:
    """Every committed run over `split`: its run.json and report.json, in reading order (the base model
    through each strategy, then the adapters by training-set size and seed, then the peer)."""
    runs = {}
    for report in RESULTS.glob(f"*/{split}/report.json"):
        run = json.loads((report.parent / "run.json").read_text())
        runs[run["name"]] = {"run": run, "report": json.loads(report.read_text())}
    return dict(sorted(runs.items(), key=lambda item: _reading_order(item[1]["run"])))


def _reading_order(run: dict[str, Any]) -> tuple[int, int, int, str]:
    training = (run.get("adapter") or {}).get("training") or {}
    if training:
        return 1, training["size"], training["seed"], run["name"]
    if run.get("strategy") in STRATEGIES:  # the base model
        return 0, STRATEGIES.index(run["strategy"]), 0, run["name"]
    return 2, 0, 0, run["name"]  # a peer


def outcomes(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Each turn of a run with its conversation's metadata and whether the run decided it right: the
    task (null as none) and the event, counted only when the run's decider decided it."""
    meta = {row["id"]: row for row in bench_data.read_jsonl(bench_data.BENCH / "meta.jsonl")}
    decider = entry["run"].get("decider")
    rows = []
    for turn in entry["report"]["turns"]:
        decided = turn["status"] == 200 and (decider is None or turn["backend"] == decider)
        info = meta[turn["conversation"]]
        rows.append({
            "conversation": turn["conversation"], "index": turn["index"], "registry": info["registry"],
            "lang": info["lang"], "near_miss": "near_miss" in info["tags"], "expected_event": turn["expected"]["event"],
            "expects_task": turn["expected"]["task"] is not None,
            "task_right": decided and turn["predicted"]["task"] == turn["expected"]["task"],
            "event_right": decided and turn["predicted"]["event"] == turn["expected"]["event"],
            "latency_ms": turn["latency_ms"] if decided else None, "reason": turn["fallback_reason"],
        })  # fmt: skip
    return rows


def bootstrap(rows: list[dict[str, Any]], field: str, seed: int = 0) -> tuple[float, float, float]:
    """The share of `rows` whose `field` holds, and its 95 % interval, resampling whole conversations."""
    by_conversation: dict[str, list[int]] = collections.defaultdict(list)
    for row in rows:
        by_conversation[row["conversation"]].append(int(bool(row[field])))
    return _resampled(list(by_conversation.values()), seed)


def paired(base: list[dict[str, Any]], other: list[dict[str, Any]], field: str, seed: int = 0) -> tuple[float, float, float]:
    """other - base on the same turns, with a 95 % interval bootstrapped by conversation."""
    key = lambda row: (row["conversation"], row["index"])  # noqa: E731
    base_by = {key(row): row for row in base}
    by_conversation: dict[str, list[int]] = collections.defaultdict(list)
    for row in other:
        by_conversation[row["conversation"]].append(int(bool(row[field])) - int(bool(base_by[key(row)][field])))
    return _resampled(list(by_conversation.values()), seed)


def _resampled(groups: list[list[int]], seed: int) -> tuple[float, float, float]:
    """The mean of every value, and its 95 % percentile interval over BOOTSTRAP_DRAWS resamplings of
    the groups (conversations) with replacement."""
    point = sum(map(sum, groups)) / sum(map(len, groups))
    draw, estimates = random.Random(seed), []
    for _ in range(BOOTSTRAP_DRAWS):
        sample = [groups[draw.randrange(len(groups))] for _ in groups]
        estimates.append(sum(map(sum, sample)) / sum(map(len, sample)))
    estimates.sort()
    return point, estimates[int(0.025 * BOOTSTRAP_DRAWS)], estimates[int(0.975 * BOOTSTRAP_DRAWS) - 1]


def _apart(rows: list[dict[str, Any]], held_out: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of the seen registries, and those of the held-out one."""
    return [r for r in rows if r["registry"] not in held_out], [r for r in rows if r["registry"] in held_out]


def _ci(value: tuple[float, float, float]) -> str:
    return f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"


def _share(rows: list[dict[str, Any]], field: str) -> str:
    return f"{sum(bool(r[field]) for r in rows) / len(rows):.2f}" if rows else "–"


def _p50(rows: list[dict[str, Any]]) -> str:
    latencies = sorted(r["latency_ms"] for r in rows if r["latency_ms"] is not None)
    return f"{latencies[len(latencies) // 2]:.0f}" if latencies else "–"


def table(split: str = "test", baseline: str = "base-zero_shot") -> str:
    runs = load_runs(split)
    if not runs:
        return "No run is committed yet.\n"
    held_out = {name for name, spec in bench_data.registries().items() if spec["held_out"]}
    rows_of = {name: outcomes(entry) for name, entry in runs.items()}
    lines = [f"Over the {split} split: seen registries (`seen`) and the held-out registry (`unseen`) apart. "
             "Accuracy with its 95 % interval, bootstrapped by conversation (1,000 draws).", "",
             "| run | turns | task acc. seen | task acc. unseen | event acc. seen | event acc. unseen | p50 ms | not decided |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in rows_of.items():
        seen, unseen = _apart(rows, held_out)
        missed = collections.Counter(r["reason"] or "error" for r in rows if r["latency_ms"] is None)
        lines.append(f"| {name} | {len(rows)} | {_ci(bootstrap(seen, 'task_right'))} | "
                     f"{_ci(bootstrap(unseen, 'task_right')) if unseen else '–'} | {_ci(bootstrap(seen, 'event_right'))} | "
                     f"{_ci(bootstrap(unseen, 'event_right')) if unseen else '–'} | {_p50(rows)} | "
                     f"{', '.join(f'{n} {reason}' for reason, n in sorted(missed.items())) or '0'} |")
    lines += ["", "Recall of each expected event (all turns of the split):", "",
              "| run | " + " | ".join(EVENTS) + " |", "|---|" + "---|" * len(EVENTS)]
    for name, rows in rows_of.items():
        lines.append(f"| {name} | " + " | ".join(_share([r for r in rows if r["expected_event"] == e], "event_right")
                                                for e in EVENTS) + " |")
    registries = sorted({r["registry"] for rows in rows_of.values() for r in rows})
    languages = sorted({r["lang"] for rows in rows_of.values() for r in rows})
    header = ("| run | " + " | ".join(f"{r} ({len(bench_data.registries()[r]['tasks'])})" for r in registries) + " | "
              + " | ".join(languages) + " | near-miss |")
    rule = "|---|" + "---|" * (len(registries) + len(languages) + 1)
    for caption, keep in (
        ("Task accuracy by registry (tasks in the registry), language, and on conversations with a near-miss pair:",
         lambda row: True),
        ("The same over the turns that expect a task (to start, continue or switch to): `none` and `end` turns left "
         "out, as their share differs by registry and language:", lambda row: row["expects_task"]),
    ):
        lines += ["", caption, "", header, rule]
        for name, rows in rows_of.items():
            kept = [r for r in rows if keep(r)]
            cells = [_share([r for r in kept if r["registry"] == registry], "task_right") for registry in registries]
            cells += [_share([r for r in kept if r["lang"] == language], "task_right") for language in languages]
            cells.append(_share([r for r in kept if r["near_miss"]], "task_right"))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if baseline in rows_of and len(rows_of) > 1:
        lines += ["", f"Against `{baseline}` on the same turns (difference, 95 % interval, paired by conversation):", "",
                  "| run | task acc. seen | task acc. unseen | event acc. all |", "|---|---|---|---|"]
        base = rows_of[baseline]
        for name, rows in rows_of.items():
            if name == baseline:
                continue
            seen, unseen = _apart(rows, held_out)
            lines.append(f"| {name} | {_ci(paired(base, seen, 'task_right'))} | "
                         f"{_ci(paired(base, unseen, 'task_right')) if unseen else '–'} | {_ci(paired(base, rows, 'event_right'))} |")
    lines += learning_curve(runs, rows_of, baseline, held_out)
    lines += ["", "Each run: its command, model, adapter and duration.", "",
              "| run | strategy | model | adapter manifest | trained on | eval s | date | command |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in runs.items():
        run = entry["run"]
        adapter = run.get("adapter") or {}
        training = adapter.get("training") or {}
        trained = f"{training.get('size')} turns, seed {training.get('seed')}" if training else "–"
        lines.append(f"| {name} | {run.get('strategy', '–')} | {run.get('model', '–')} | "
                     f"{(adapter.get('manifest_sha256') or '–')[:12]} | {trained} | {run.get('seconds', '–')} | {run.get('date', '–')} | "
                     f"`{run['command']}` |")
    return "\n".join(lines) + "\n"


def learning_curve(runs: dict[str, dict[str, Any]], rows_of: dict[str, list[dict[str, Any]]], baseline: str,
                   held_out: set[str]) -> list[str]:
    """The base model, then the adapters by training-set size: what `adapter train` made of each set
    (examples it trained on and held out, steps at the batch size: the examples seen), task accuracy
    seen and unseen against the base on the same turns, and on the turns that expect a task, the
    largest registry against the other seen ones."""
    curve = [(name, entry["run"]["adapter"]) for name, entry in runs.items() if (entry["run"].get("adapter") or {}).get("training")]
    if not curve or baseline not in rows_of:
        return []
    sizes = {name: len(spec["tasks"]) for name, spec in bench_data.registries().items() if name not in held_out}
    largest = max(sizes, key=sizes.get)
    lines = ["", f"The learning curve: `{baseline}`, then each adapter by the size of its training set (task accuracy; "
             "Δ: against the base on the same turns, paired by conversation; the last two columns over the turns that "
             f"expect a task, `{largest}` the {sizes[largest]}-task registry, `other` the other seen registries).", "",
             "| run | turns (each event) | trained on / held out | examples seen (steps × batch) | epochs, learning rate | "
             f"train s | validation loss | seen | unseen | Δ seen | Δ unseen | {largest}, task turns | other, task turns |",
             "|---|" + "---|" * 12]
    base = rows_of[baseline]
    for name, adapter in [(baseline, None), *curve]:
        rows = rows_of[name]
        seen, unseen = _apart(rows, held_out)
        task_turns = [r for r in seen if r["expects_task"]]
        cells = [_ci(bootstrap(seen, "task_right")), _ci(bootstrap(unseen, "task_right"))]
        if adapter is None:
            cells = ["0", "–", "–", "–", "–", "–", *cells, "–", "–"]
        else:
            split, result, hyper = adapter.get("split") or {}, adapter.get("result") or {}, adapter.get("hyper_parameters") or {}
            size = adapter["training"]["size"]
            cells = [f"{size} ({size // len(EVENTS)})", f"{split.get('train_examples', '–')} / {split.get('validation_examples', '–')}",
                     str(result.get("steps", 0) * hyper.get("batch_size", 0) or "–"),
                     f"{hyper.get('epochs', '–')}, {hyper.get('learning_rate', '–'):g}" if "learning_rate" in hyper else "–",
                     str(round(result["seconds"])) if "seconds" in result else "–",
                     format(result["validation_loss"], ".2f") if result.get("validation_loss") is not None else "–",
                     *cells, _ci(paired(base, seen, "task_right")), _ci(paired(base, unseen, "task_right"))]
        cells += [_ci(bootstrap([r for r in task_turns if r["registry"] == largest], "task_right")),
                  _ci(bootstrap([r for r in task_turns if r["registry"] != largest], "task_right"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_block(text: str, begin_marker: str, end_marker: str, doc: Path = ROOT / "docs" / "benchmark.md") -> None:
    """`text` between the two markers of docs/benchmark.md, in place of what stood there."""
    content = doc.read_text()
    begin, end = content.index(begin_marker) + len(begin_marker), content.index(end_marker)
    doc.write_text(content[:begin] + "\n" + text + content[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    evaluating = commands.add_parser("eval")
    evaluating.add_argument("--name", required=True)
    evaluating.add_argument("--split", default="test", choices=bench_data.SPLITS)
    evaluating.add_argument("--strategy", default="zero_shot", choices=STRATEGIES)
    evaluating.add_argument("--adapter", type=Path)
    training = commands.add_parser("train")
    training.add_argument("--size", type=int, required=True)
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--learning-rate", type=float, default=HYPER["learning_rate"],
                          help=f"default {HYPER['learning_rate']:g}; another is named in the adapter's run name")
    tabling = commands.add_parser("table")
    tabling.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "eval":
        evaluate(args.name, args.split, args.strategy, args.adapter)
    elif args.command == "train":
        print(train(args.size, args.seed, args.learning_rate))
    else:
        text = table()
        if args.write:
            write_block(text, TABLE_BEGIN, TABLE_END)
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
