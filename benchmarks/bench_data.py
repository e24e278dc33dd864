"""The routing benchmark's data (docs/benchmark.md): from the writers' files to the committed splits.

    .venv/bin/python benchmarks/bench_data.py strip RAW.jsonl... --copy COPY.jsonl --first FIRST.jsonl
    .venv/bin/python benchmarks/bench_data.py agree --copy COPY.jsonl --first FIRST.jsonl --second SECOND.jsonl --out DIR
    .venv/bin/python benchmarks/bench_data.py finalize RAW.jsonl... --adjudication ADJ.jsonl --out datasets/bench
    .venv/bin/python benchmarks/bench_data.py stats [--bench datasets/bench] [--markdown]

1. `strip`: the writers' conversations (their raw form: id, registry, lang, tags, allow, messages with
   labels) become the labeller's copy, in the dataset format with every label removed and each user
   message's allowed tasks kept (`tasks`), and the writers' labels (the first labelling) one line a turn.
2. `agree`: the second labeller's labels (one line a turn, made from the copy alone) against the first:
   Cohen's kappa for the task and the event, overall and per registry, and the disagreements to settle.
3. `finalize`: each disagreement settled (adjudication: the final task and a one-line reason), the
   events derived again from the final tasks, the conversations split by conversation (train, dev,
   test; the held-out registry in test only), with their metadata and statistics.
4. `stats`: the statistics of the committed splits, as docs/benchmark.md states them.

A turn's label line: {"id": conversation id, "index": the user message's index, "task": name|null, "event": ...}.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "datasets" / "bench"
EVENTS = ("start", "continue", "switch", "end", "none")
SPLITS = ("train", "dev", "test")
SHARES = {"train": 0.6, "dev": 0.15, "test": 0.25}  # of each (registry, language) stratum of the seen registries
NONE_LABEL = "none"  # a null task, as the reports count it
NEAR_DUPLICATE_JACCARD = 0.5  # users' text of two conversations in two splits: character 5-gram Jaccard below this
SHINGLE = 5


# -- reading ---------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def registries(bench: Path = BENCH) -> dict[str, dict[str, Any]]:
    return json.loads((bench / "registries.json").read_text())["registries"]


def derive_event(running: str | None, task: str | None) -> str:
    if running is None:
        return NONE_LABEL if task is None else "start"
    if task is None:
        return "end"
    return "continue" if task == running else "switch"


def user_turns(messages: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    return ((index, message) for index, message in enumerate(messages) if message["role"] == "user")


# -- 1. strip --------------------------------------------------------------------------------------
def dataset_line(raw: dict[str, Any], allowed: list[str], labels: dict[int, dict[str, Any]] | None) -> dict[str, Any]:
    """A raw conversation in the dataset format: `tasks` on each user message; labels when given."""
    messages = []
    for index, message in enumerate(raw["messages"]):
        shaped: dict[str, Any] = {"role": message["role"], "content": message["content"]}
        if message["role"] == "user":
            shaped["tasks"] = allowed
            if labels is not None:
                shaped["expect"] = labels[index]
        messages.append(shaped)
    return {"id": raw["id"], "messages": messages}


def allowed_tasks(raw: dict[str, Any], known: dict[str, dict[str, Any]]) -> list[str]:
    """The conversation's allowed tasks: its allow-list, else its registry's tasks, in the registry's order."""
    registry = known[raw["registry"]]["tasks"]
    return registry if raw["allow"] is None else [name for name in registry if name in set(raw["allow"])]


def strip(raws: list[dict[str, Any]], known: dict[str, dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    copy, first = [], []
    for raw in sorted(raws, key=lambda r: r["id"]):
        copy.append(dataset_line(raw, allowed_tasks(raw, known), None))
        first.extend({"id": raw["id"], "index": index, **message["expect"]} for index, message in user_turns(raw["messages"]))
    return copy, first


# -- 2. agree --------------------------------------------------------------------------------------
def keyed(labels: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(label["id"], label["index"]): label for label in labels}


def check_labels(copy: list[dict[str, Any]], labels: list[dict[str, Any]], who: str) -> list[str]:
    """Every turn of the copy labelled once, with an allowed task and the event its task means."""
    problems, by_turn = [], keyed(labels)
    if len(by_turn) != len(labels):
        problems.append(f"{who}: a turn is labelled twice")
    for conversation in copy:
        running = None
        for index, message in user_turns(conversation["messages"]):
            label = by_turn.get((conversation["id"], index))
            if label is None:
                problems.append(f"{who}: {conversation['id']}[{index}] unlabelled")
                continue
            if label["task"] is not None and label["task"] not in message["tasks"]:
                problems.append(f"{who}: {conversation['id']}[{index}] task {label['task']} not allowed")
            if label["event"] != derive_event(running, label["task"]):
                problems.append(f"{who}: {conversation['id']}[{index}] event {label['event']} with {running} running")
            running = label["task"]
    return problems


def kappa(first: list[str], second: list[str]) -> float:
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(first, second)) if len(set(first) | set(second)) > 1 else 1.0


def agreement(copy: list[dict], first: list[dict], second: list[dict], known: dict[str, dict]) -> dict[str, Any]:
    registry_of = {name: registry for registry, spec in known.items() for name in spec["tasks"]}
    a, b = keyed(first), keyed(second)
    turns = sorted(a)
    groups: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for conversation in copy:
        first_allowed = next(message["tasks"] for _, message in user_turns(conversation["messages"]))
        registry = registry_of[first_allowed[0]]
        groups[registry].extend(key for key in turns if key[0] == conversation["id"])

    def measured(keys: list[tuple[str, int]]) -> dict[str, Any]:
        out: dict[str, Any] = {"turns": len(keys)}
        for field in ("task", "event"):
            x = [str(a[key][field] or NONE_LABEL) for key in keys]
            y = [str(b[key][field] or NONE_LABEL) for key in keys]
            out[field] = {"kappa": round(kappa(x, y), 4), "agreement": round(sum(p == q for p, q in zip(x, y)) / len(keys), 4)}
        return out

    return {"overall": measured(turns), "by_registry": {name: measured(keys) for name, keys in sorted(groups.items())}}


def disagreements(copy: list[dict], first: list[dict], second: list[dict]) -> list[dict[str, Any]]:
    a, b = keyed(first), keyed(second)
    out = []
    for conversation in copy:
        for index, _ in user_turns(conversation["messages"]):
            x, y = a[(conversation["id"], index)], b[(conversation["id"], index)]
            if (x["task"], x["event"]) != (y["task"], y["event"]):
                out.append({"id": conversation["id"], "index": index,
                            "first": {"task": x["task"], "event": x["event"]},
                            "second": {"task": y["task"], "event": y["event"]}})
    return out


# -- 3. finalize -----------------------------------------------------------------------------------
def final_labels(raw: dict[str, Any], settled: dict[tuple[str, int], dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each user turn's final label: the settled task where the labellers disagreed, else the agreed
    one; events derived again from the final tasks (a settled turn moves the running task of the next)."""
    labels, running = {}, None
    for index, message in user_turns(raw["messages"]):
        decision = settled.get((raw["id"], index))
        task = decision["final"]["task"] if decision else message["expect"]["task"]
        labels[index] = {"task": task, "event": derive_event(running, task)}
        running = task
    return labels


def stable_order(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=lambda identifier: hashlib.sha256(identifier.encode()).hexdigest())


def assign_splits(raws: list[dict[str, Any]], known: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Split by conversation: the held-out registries to test; every other (registry, language) stratum
    in the shares of SHARES, in an order fixed by the ids' digests."""
    strata: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    split_of = {}
    for raw in raws:
        if known[raw["registry"]]["held_out"]:
            split_of[raw["id"]] = "test"
        else:
            strata[(raw["registry"], raw["lang"])].append(raw["id"])
    for ids in strata.values():
        ordered = stable_order(ids)
        dev = round(len(ordered) * SHARES["dev"])
        test = round(len(ordered) * SHARES["test"])
        for position, identifier in enumerate(ordered):
            split_of[identifier] = "dev" if position < dev else "test" if position < dev + test else "train"
    return split_of


def finalize(raws: list[dict], settled: list[dict], known: dict[str, dict], out: Path) -> dict[str, Any]:
    by_turn = {(row["id"], row["index"]): row for row in settled}
    split_of = assign_splits(raws, known)
    files: dict[str, list[dict]] = {split: [] for split in SPLITS}
    meta = []
    for raw in sorted(raws, key=lambda r: r["id"]):
        labels = final_labels(raw, by_turn)
        files[split_of[raw["id"]]].append(dataset_line(raw, allowed_tasks(raw, known), labels))
        meta.append({"id": raw["id"], "registry": raw["registry"], "lang": raw["lang"], "tags": sorted(raw["tags"]),
                     "restricted": raw["allow"] is not None, "split": split_of[raw["id"]]})
    for split, rows in files.items():
        write_jsonl(out / f"{split}.jsonl", rows)
    write_jsonl(out / "meta.jsonl", meta)
    stats = statistics(out)
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats


# -- 4. statistics ---------------------------------------------------------------------------------
def load_bench(bench: Path = BENCH) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    return {split: read_jsonl(bench / f"{split}.jsonl") for split in SPLITS}, {row["id"]: row for row in read_jsonl(bench / "meta.jsonl")}


def statistics(bench: Path = BENCH) -> dict[str, Any]:
    """Counts of conversations and turns by split, registry, language, event and tag; allow-lists."""
    files, meta = load_bench(bench)
    count: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for split, conversations in files.items():
        for conversation in conversations:
            info = meta[conversation["id"]]
            turns = [message for _, message in user_turns(conversation["messages"])]
            for key in (f"split:{split}", f"registry:{info['registry']}", f"lang:{info['lang']}", "all"):
                count[key]["conversations"] += 1
                count[key]["turns"] += len(turns)
                for message in turns:
                    count[key][f"event:{message['expect']['event']}"] += 1
                count[key]["restricted_turns"] += len(turns) if info["restricted"] else 0
            for tag in info["tags"]:
                count["tags"][tag] += 1
            count["split_registry"][f"{split}:{info['registry']}"] += 1
    return {key: dict(sorted(counter.items())) for key, counter in sorted(count.items())}


def copy_digests(files: dict[str, list[dict]], meta: dict[str, dict]) -> dict[str, str]:
    """Each registry's unlabelled copy rebuilt from the splits (labels removed, by id, as `strip`
    wrote it) and its SHA-256: equal to the digest committed before the second labelling, they show
    that no conversation changed after it."""
    lines: dict[str, list[str]] = collections.defaultdict(list)
    for conversation in sorted((c for rows in files.values() for c in rows), key=lambda c: c["id"]):
        unlabelled = {"id": conversation["id"],
                      "messages": [{k: v for k, v in m.items() if k != "expect"} for m in conversation["messages"]]}
        lines[meta[conversation["id"]]["registry"]].append(json.dumps(unlabelled, ensure_ascii=False) + "\n")
    return {registry: hashlib.sha256("".join(rows).encode()).hexdigest() for registry, rows in lines.items()}


def datasheet_tables(stats: dict[str, Any], agreement_: dict[str, Any]) -> str:
    """The datasheet's statistics and agreement, as Markdown (docs/benchmark.md holds this block)."""
    def row(name: str, counts: dict[str, int]) -> str:
        turns = counts["turns"]
        shares = " | ".join(f"{counts.get(f'event:{event}', 0)} ({counts.get(f'event:{event}', 0) / turns:.0%})" for event in EVENTS)
        return f"| {name} | {counts['conversations']} | {turns} | {shares} | {counts['restricted_turns']} ({counts['restricted_turns'] / turns:.0%}) |"

    head = ["| | conversations | turns | " + " | ".join(EVENTS) + " | turns with a restricted allow-list |",
            "|---|" + "---|" * (3 + len(EVENTS))]
    blocks = ["By split:", "", *head, *(row(split, stats[f"split:{split}"]) for split in SPLITS), row("all", stats["all"]), "",
              "By registry:", "", *head,
              *(row(key.split(":", 1)[1], counts) for key, counts in stats.items() if key.startswith("registry:")), "",
              "By language:", "", *head,
              *(row(key.split(":", 1)[1], counts) for key, counts in stats.items() if key.startswith("lang:")), "",
              "Conversations by split and registry: " + ", ".join(f"{key} {count}" for key, count in stats["split_registry"].items()) + ".", "",
              "Conversations by tag: " + ", ".join(f"{tag} {count}" for tag, count in stats["tags"].items()) + ".", "",
              "Agreement of the two labellings (Cohen's kappa, and the share of turns labelled alike):", "",
              "| | turns | task kappa | task agreement | event kappa | event agreement |", "|---|---|---|---|---|---|"]
    for name, measured in [("all", agreement_["overall"]), *agreement_["by_registry"].items()]:
        blocks.append(f"| {name} | {measured['turns']} | {measured['task']['kappa']:.3f} | {measured['task']['agreement']:.3f} "
                      f"| {measured['event']['kappa']:.3f} | {measured['event']['agreement']:.3f} |")
    return "\n".join(blocks) + "\n"


def shingles(conversation: dict[str, Any]) -> set[str]:
    text = " ".join(" ".join(message["content"].lower().split()) for _, message in user_turns(conversation["messages"]))
    return {text[start:start + SHINGLE] for start in range(max(len(text) - SHINGLE + 1, 1))}


def near_duplicates(files: dict[str, list[dict]], threshold: float = NEAR_DUPLICATE_JACCARD) -> list[tuple[str, str, float]]:
    """Pairs of conversations in two different splits whose users' text is this similar or more
    (Jaccard of character 5-grams, lower-cased, spaces collapsed)."""
    split_of, grams = {}, {}
    for split, conversations in files.items():
        for conversation in conversations:
            split_of[conversation["id"]] = split
            grams[conversation["id"]] = shingles(conversation)
    index: dict[str, set[str]] = collections.defaultdict(set)
    for identifier, gram_set in grams.items():
        for gram in gram_set:
            index[gram].add(identifier)
    found = []
    for identifier, gram_set in grams.items():
        shared: collections.Counter = collections.Counter()
        for gram in gram_set:
            shared.update(other for other in index[gram] if other > identifier and split_of[other] != split_of[identifier])
        for other, common in shared.items():
            similarity = common / len(gram_set | grams[other])
            if similarity >= threshold:
                found.append((identifier, other, round(similarity, 3)))
    return sorted(found)


# -- command line ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    strip_parser = commands.add_parser("strip")
    strip_parser.add_argument("raw", nargs="+", type=Path)
    strip_parser.add_argument("--copy", type=Path, required=True)
    strip_parser.add_argument("--first", type=Path, required=True)
    agree_parser = commands.add_parser("agree")
    for name in ("--copy", "--first", "--second", "--out"):
        agree_parser.add_argument(name, type=Path, required=True)
    finalize_parser = commands.add_parser("finalize")
    finalize_parser.add_argument("raw", nargs="+", type=Path)
    finalize_parser.add_argument("--adjudication", type=Path, required=True)
    finalize_parser.add_argument("--out", type=Path, default=BENCH)
    stats_parser = commands.add_parser("stats")
    stats_parser.add_argument("--bench", type=Path, default=BENCH)
    stats_parser.add_argument("--markdown", action="store_true", help="the datasheet's tables (docs/benchmark.md)")
    args = parser.parse_args(argv)

    if args.command == "strip":
        raws = [row for path in args.raw for row in read_jsonl(path)]
        copy, first = strip(raws, registries())
        write_jsonl(args.copy, copy)
        write_jsonl(args.first, first)
        digest = hashlib.sha256(args.copy.read_bytes()).hexdigest()
        args.copy.with_suffix(".sha256").write_text(f"{digest}  {args.copy.name}\n")
        print(f"{len(copy)} conversations, {len(first)} turns; copy sha256 {digest}")
    elif args.command == "agree":
        copy, first, second = read_jsonl(args.copy), read_jsonl(args.first), read_jsonl(args.second)
        problems = check_labels(copy, first, "first") + check_labels(copy, second, "second")
        if problems:
            print("\n".join(problems[:40]), file=sys.stderr)
            return 1
        measured = agreement(copy, first, second, registries())
        (args.out / "agreement.json").write_text(json.dumps(measured, indent=1) + "\n")
        differing = disagreements(copy, first, second)
        write_jsonl(args.out / "disagreements.jsonl", differing)
        print(json.dumps(measured["overall"]), f"{len(differing)} disagreements")
    elif args.command == "finalize":
        raws = [row for path in args.raw for row in read_jsonl(path)]
        stats = finalize(raws, read_jsonl(args.adjudication), registries(), args.out)
        print(json.dumps(stats["all"]))
    elif args.markdown:
        agreement_ = json.loads((args.bench / "labelling" / "agreement.json").read_text())
        print(datasheet_tables(statistics(args.bench), agreement_), end="")
    else:
        print(json.dumps(statistics(args.bench), indent=1, sort_keys=True))
        files, _ = load_bench(args.bench)
        print(f"near-duplicate pairs across splits: {near_duplicates(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
