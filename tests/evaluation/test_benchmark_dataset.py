"""The routing benchmark's data (docs/benchmark.md, datasets/bench/): the splits, the statistics the
datasheet states, the two labellings and their adjudication, and that the tools take the files as
they are."""

import json
from pathlib import Path

import pytest

from benchmarks import bench_data
from taskrouter.core.task_spec import load_task_file
from taskrouter.evaluation.dataset import load_dataset, turns_of

BENCH = bench_data.BENCH
DATASHEET = Path(__file__).resolve().parents[2] / "docs" / "benchmark.md"


@pytest.fixture(scope="module")
def bench():
    files, meta = bench_data.load_bench()
    return files, meta


@pytest.fixture(scope="module")
def labelling():
    read = bench_data.read_jsonl
    return (read(BENCH / "labelling" / "first.jsonl"), read(BENCH / "labelling" / "second.jsonl"),
            read(BENCH / "labelling" / "adjudication.jsonl"))


def test_every_conversation_is_in_one_split_and_the_held_out_registry_in_test_only(bench):
    files, meta = bench
    ids = [conversation["id"] for rows in files.values() for conversation in rows]
    assert len(ids) == len(set(ids)) == len(meta)
    held_out = {name for name, spec in bench_data.registries().items() if spec["held_out"]}
    for split, rows in files.items():
        for conversation in rows:
            assert meta[conversation["id"]]["split"] == split
            if meta[conversation["id"]]["registry"] in held_out:
                assert split == "test"
    assert held_out and {meta[i]["registry"] for i in ids if meta[i]["split"] == "train"}.isdisjoint(held_out)


def test_no_two_splits_share_near_duplicate_text(bench):
    """Users' text of conversations in two splits: character 5-gram Jaccard under 0.5."""
    assert bench_data.near_duplicates(bench[0]) == []


def test_the_tools_take_the_files_as_they_are(bench):
    tasks = {task.name for task in load_task_file(BENCH / "tasks.json", updated_at="")}
    registries = bench_data.registries()
    assert sorted(tasks) == sorted(name for spec in registries.values() for name in spec["tasks"])
    for split in bench_data.SPLITS:
        conversations = load_dataset(BENCH / f"{split}.jsonl")  # checks labels, events and allow-lists
        for turn in turns_of(conversations):
            assert turn.tasks and set(turn.tasks) <= tasks  # every turn allow-listed to its registry's tasks


def test_the_statistics_and_the_datasheet_state_the_data(bench):
    stats = bench_data.statistics()
    assert json.loads((BENCH / "stats.json").read_text()) == stats
    agreement = json.loads((BENCH / "labelling" / "agreement.json").read_text())
    assert bench_data.datasheet_tables(stats, agreement) in DATASHEET.read_text()


def test_the_data_meets_what_the_benchmark_promises(bench):
    stats, (_, meta) = bench_data.statistics(), bench
    everything = stats["all"]
    assert everything["conversations"] >= 400 and everything["turns"] >= 1200
    for event in bench_data.EVENTS:
        assert everything[f"event:{event}"] / everything["turns"] >= 0.10, event
    assert everything["event:none"] / everything["turns"] >= 0.25
    languages = {info["lang"] for info in meta.values()}
    assert {"en", "fr", "de", "es", "it"} <= languages
    assert sum(info["lang"] != "en" for info in meta.values()) / len(meta) >= 0.30
    assert everything["restricted_turns"] / everything["turns"] >= 0.10
    for tag in ("long_paste", "typos", "code_switch", "returns", "near_miss", "not_allowed", "out_of_scope"):
        assert stats["tags"].get(tag, 0) >= 10, tag
    sizes = {name: len(spec["tasks"]) for name, spec in bench_data.registries().items()}
    assert sizes["workplace"] >= 35 and len(sizes) == 4


def test_the_copies_labelled_second_are_the_conversations_of_the_splits(bench):
    """The digest of each unlabelled copy, committed before its second labelling, is the digest of the
    splits' conversations with their labels removed: nothing changed after the labelling."""
    digests = bench_data.copy_digests(*bench)
    for registry, digest in digests.items():
        committed = (BENCH / "labelling" / f"copy-{registry}.sha256").read_text().split()[0]
        assert digest == committed, registry


def test_the_agreement_is_recomputed_from_the_two_labellings(bench, labelling):
    files, _ = bench
    first, second, _ = labelling
    copy = [{"id": c["id"], "messages": [{k: v for k, v in m.items() if k != "expect"} for m in c["messages"]]}
            for rows in files.values() for c in rows]
    assert bench_data.check_labels(copy, first, "first") == []
    assert bench_data.check_labels(copy, second, "second") == []
    measured = bench_data.agreement(copy, first, second, bench_data.registries())
    assert measured == json.loads((BENCH / "labelling" / "agreement.json").read_text())


def test_every_disagreement_is_settled_with_a_reason_and_the_splits_hold_the_settled_labels(bench, labelling):
    files, _ = bench
    first, second, adjudication = labelling
    copy = [c for rows in files.values() for c in rows]
    differing = {(d["id"], d["index"]) for d in bench_data.disagreements(copy, first, second)}
    settled = {(row["id"], row["index"]): row for row in adjudication}
    assert set(settled) == differing
    for row in adjudication:
        assert len(row["reason"]) >= 40 and "\n" not in row["reason"]
    agreed = bench_data.keyed(first)
    for conversation in copy:
        running = None
        for index, message in bench_data.user_turns(conversation["messages"]):
            key = (conversation["id"], index)
            task = settled[key]["final"]["task"] if key in settled else agreed[key]["task"]
            assert message["expect"]["task"] == task, key
            assert message["expect"]["event"] == bench_data.derive_event(running, task), key
            running = task
