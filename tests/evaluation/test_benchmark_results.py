"""The benchmark's measurements (docs/benchmark.md, "Results"): the tables are built from the committed
reports alone, and the training sets of the learning curve are balanced across events and nested."""

import collections

from benchmarks import bench_data, routing_bench


def test_the_results_block_of_the_datasheet_is_the_table_of_the_committed_reports():
    doc = (routing_bench.ROOT / "docs" / "benchmark.md").read_text()
    begin = doc.index(routing_bench.TABLE_BEGIN) + len(routing_bench.TABLE_BEGIN)
    block = doc[begin:doc.index(routing_bench.TABLE_END)]
    assert block == "\n" + routing_bench.table()
    tables = [[]]
    for line in block.splitlines():
        if line.startswith("|"):
            tables[-1].append(line.count("|"))
        elif tables[-1]:
            tables.append([])
    assert all(len(set(columns)) == 1 for columns in tables if columns), tables  # each row as wide as its header


def test_every_committed_run_says_how_it_was_made():
    for name, entry in routing_bench.load_runs().items():
        run = entry["run"]
        assert run["name"] == name and run["command"] and run["seconds"] >= 0 and run["date"]
        assert len(entry["report"]["turns"]) == bench_data.statistics()["split:test"]["turns"]


def test_a_learning_curve_s_training_sets_are_balanced_across_events_and_nested():
    curve = [routing_bench.balanced_turns(size, 0) for size in (25, 50, 100, 200)]
    for chosen in curve:
        events = collections.Counter(line["messages"][-1]["expect"]["event"] for line in chosen)
        assert set(events.values()) == {len(chosen) // 5}, events
        assert len({line["id"] for line in chosen}) == len(chosen)
    for smaller, larger in zip(curve, curve[1:]):
        assert {line["id"] for line in smaller} < {line["id"] for line in larger}
    small = curve[1]
    assert routing_bench.balanced_turns(50, 0) == small and routing_bench.balanced_turns(50, 1) != small


def test_a_training_line_is_the_turn_the_router_sees():
    """Single-turn form: the conversation up to the turn, its running task, its label and allow-list."""
    line = next(l for l in routing_bench.balanced_turns(50, 0) if l["messages"][-1]["expect"]["event"] == "continue")
    last = line["messages"][-1]
    assert line["current_task"] == last["expect"]["task"] and last["role"] == "user" and last["tasks"]
    assert all("expect" not in m and "tasks" not in m for m in line["messages"][:-1])


def test_the_cascade_block_of_the_datasheet_is_built_from_the_committed_reports():
    from benchmarks import cascade

    doc = (routing_bench.ROOT / "docs" / "benchmark.md").read_text()
    begin = doc.index(cascade.BEGIN) + len(cascade.BEGIN)
    assert doc[begin:doc.index(cascade.END)] == "\n" + cascade.table()


def test_the_best_order_ranks_every_right_answer_first():
    from benchmarks import cascade
    from taskrouter.evaluation.calibration import Scored

    turns = [Scored(0.9, False, "start"), Scored(0.2, True, "start"), Scored(0.5, True, "none")]
    # right, right, wrong: risks 0, 0, 1/3 at k = 1, 2, 3
    assert cascade.best_aurc(turns) == (0 + 0 + 1 / 3) / 3


def test_runs_read_as_base_strategies_then_the_learning_curve_by_size_then_the_peer(tmp_path, monkeypatch):
    import json

    def committed(name, strategy, size=None):
        adapter = None if size is None else {"training": {"size": size, "seed": 0}}
        folder = tmp_path / name / "test"
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"name": name, "strategy": strategy, "decider": "sagemaker", "adapter": adapter}))
        (folder / "report.json").write_text("{}")

    committed("peer-semantic-router", "–")
    committed(routing_bench.adapter_name(100, 0), "zero_shot", 100)
    committed(routing_bench.adapter_name(50, 0, 2e-4), "zero_shot", 50)
    committed(routing_bench.adapter_name(25, 0), "zero_shot", 25)
    committed(routing_bench.adapter_name(50, 0), "zero_shot", 50)
    for strategy in ("react", "zero_shot", "few_shot_cot"):
        committed(f"base-{strategy}", strategy)
    monkeypatch.setattr(routing_bench, "RESULTS", tmp_path)
    assert list(routing_bench.load_runs()) == [
        "base-zero_shot", "base-few_shot_cot", "base-react", "lora-25-s0", "lora-50-s0", "lora-50-s0-lr0.0002",
        "lora-100-s0", "peer-semantic-router"]
