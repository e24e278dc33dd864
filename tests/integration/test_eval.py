"""`taskrouter eval` end to end: the in-process router and `make local`, their backends the HTTP
doubles answering from the dataset's own labels (an oracle), wrong where a test wants them wrong."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from taskrouter.cli import main
from taskrouter.evaluation.dataset import load_dataset, turns_of
from taskrouter.evaluation.metrics import ERROR_LABEL

from .servers import OpenAIDouble, Received, Reply, SageMakerRuntimeDouble
from .test_local_server import LocalServer

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "datasets" / "example.jsonl"
TASKS_FILE = ROOT / "tasks" / "default_tasks.json"
TURNS = turns_of(load_dataset(DATASET))
# The last user message of a turn, as the prompt fences it, to the task its label wants.
LABELS = {turn.messages[-1]["content"]: turn.expected.task for turn in TURNS}
_LAST_USER_MESSAGE = re.compile(r'<message role="user">([^<>]*)</message>\n</conversation>\Z')


def last_message(received: Received) -> str:
    """The last user message of the conversation the router was asked about."""
    content = _LAST_USER_MESSAGE.search(received.json()["messages"][-1]["content"]).group(1)
    return html.unescape(content.replace("&#91;", "[").replace("&#93;", "]"))


def labelled_task(received: Received) -> str | None:
    return LABELS[last_message(received)]


def oracle_sagemaker(wrong: frozenset[str] = frozenset()) -> SageMakerRuntimeDouble:
    """A primary answering each turn's label; `none` for the turns whose message holds a `wrong` phrase."""
    double = SageMakerRuntimeDouble()

    def answer(received: Received) -> Reply:
        task = None if any(phrase in last_message(received) for phrase in wrong) else labelled_task(received)
        return double.answer(task or "none")

    double.always(answer)
    return double


def oracle_openai() -> OpenAIDouble:
    """A fallback answering each turn's label, as the JSON it is asked for."""
    double = OpenAIDouble()
    double.always(lambda received: double.answer(labelled_task(received)))
    return double


def run_eval(*args: str) -> int:
    return main(["eval", *args, "--no-progress"])


def point_the_local_target_at(monkeypatch, sagemaker, openai) -> None:
    """The environment `--target local` reads, its backends the given doubles, nothing else configured."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "eval", "AWS_SECRET_ACCESS_KEY": "eval", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": sagemaker.url, "TASKROUTER_SAGEMAKER_ENDPOINT": "eval-endpoint",
        "OPENAI_BASE_URL": openai.base_url, "OPENAI_API_KEY": "sk-eval", "NO_PROXY": "127.0.0.1",
        "TASKROUTER_HEDGE_AFTER_MS": "off", "TASKROUTER_PRIMARY_TIMEOUT_MS": "2000",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("TASKROUTER_TABLE_NAME", "TASKROUTER_SAGEMAKER_COMPONENT", "TASKROUTER_OPENAI_SECRET_ARN", "AWS_PROFILE",
                 "TASKROUTER_CONFIDENCE_THRESHOLDS", "TASKROUTER_ADAPTER_NAME"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def local_env(monkeypatch):
    """The environment `--target local` reads (docs/configuration.md): the oracle doubles as backends."""
    sagemaker, openai = oracle_sagemaker(wrong=frozenset({"weather"})), oracle_openai()
    point_the_local_target_at(monkeypatch, sagemaker, openai)
    yield sagemaker, openai
    sagemaker.close()
    openai.close()


def test_eval_local_with_a_task_file_measures_the_scripted_backends(local_env, tmp_path, capsys):
    sagemaker, _ = local_env
    out = tmp_path / "local"
    assert run_eval("--dataset", str(DATASET), "--target", "local", "--tasks", str(TASKS_FILE), "--out", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    turns = report["turns"]
    assert [(t["conversation"], t["index"]) for t in turns] == [(t.conversation, t.index) for t in TURNS]
    assert all(t["status"] == 200 and t["backend"] == "sagemaker" for t in turns)
    assert sagemaker.refusals == []
    # the primary answers none for the one "weather" turn, whose label is none too: all right
    assert report["metrics"]["task"]["accuracy"] == 1.0 and report["metrics"]["event"]["accuracy"] == 1.0
    assert report["metrics"]["error_rate"] == 0.0 and report["metrics"]["fallback_rate"] == 0.0
    assert set(report["metrics"]["by_backend"]) == {"sagemaker"}
    assert "turns in" in capsys.readouterr().out


def test_eval_local_refuses_a_broken_dataset_in_one_line(local_env, tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x", "messages": [{"role": "user", "content": "hi"}]}\n')
    assert run_eval("--dataset", str(broken), "--target", "local", "--tasks", str(TASKS_FILE), "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert err.startswith("taskrouter eval: broken.jsonl:1: ") and err.count("\n") == 1


def test_eval_local_holds_each_turn_to_the_deadline_the_url_target_would(local_env, tmp_path):
    """The in-process router cannot be cut short; a decision later than --turn-timeout is a timeout."""
    sagemaker, _ = local_env
    first_turns = [turn for turn in TURNS if turn.index == 0][:2]
    dataset = tmp_path / "two.jsonl"
    dataset.write_text("".join(json.dumps({"id": turn.conversation, "messages": [
        {"role": "user", "content": turn.messages[-1]["content"], "expect": {"task": turn.expected.task, "event": turn.expected.event}}
    ]}) + "\n" for turn in first_turns))  # fmt: skip
    sagemaker.script(SageMakerRuntimeDouble.answer(first_turns[0].expected.task or "none", delay_s=1.5))
    code = run_eval("--dataset", str(dataset), "--target", "local", "--tasks", str(TASKS_FILE), "--out", str(tmp_path / "o"),
                    "--turn-timeout", "1")  # fmt: skip
    turns = json.loads((tmp_path / "o" / "report.json").read_text())["turns"]
    assert code == 0 and [(t["status"], t.get("error")) for t in turns] == [(0, "timeout: no answer within 1 s"), (200, None)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`make local` whose primary answers `none` wrongly on three turns."""
    sagemaker = oracle_sagemaker(wrong=frozenset({"recap my chat", "is he worth pursuing", "linkedin post about closing"}))
    openai = oracle_openai()
    server = LocalServer(
        tmp_path_factory.mktemp("eval"), openai,
        TASKROUTER_SAGEMAKER_ENDPOINT="eval-endpoint", AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=sagemaker.url,
        TASKROUTER_HEDGE_AFTER_MS="off", TASKROUTER_PRIMARY_TIMEOUT_MS="2000",
    )
    yield server, sagemaker, openai
    server.stop()
    sagemaker.close()
    openai.close()


def test_eval_against_make_local_sequential_and_concurrent_then_compare(served, tmp_path, capsys):
    server = served[0]
    runs = {}
    for name, concurrency in (("sequential", "1"), ("concurrent", "4")):
        out = tmp_path / name
        assert run_eval("--dataset", str(DATASET), "--target", server.url, "--out", str(out), "--concurrency", concurrency) == 0
        runs[name] = json.loads((out / "report.json").read_text())
        assert (out / "report.md").read_text().startswith(f"# Evaluation of example.jsonl against {server.url}")
        for png in ("confusion_event.png", "confusion_task.png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sequential, concurrent = runs["sequential"]["turns"], runs["concurrent"]["turns"]
    assert [(t["conversation"], t["index"], t["expected"]) for t in concurrent] == [
        (t["conversation"], t["index"], t["expected"]) for t in sequential
    ]
    assert [t["predicted"] for t in concurrent] == [t["predicted"] for t in sequential]
    metrics = runs["sequential"]["metrics"]
    wrong = 3  # the primary's wrong "none" answers: not invalid output, so they stand
    assert metrics["task"]["accuracy"] == pytest.approx((len(TURNS) - wrong) / len(TURNS))
    assert metrics["task"]["per_class"]["none"]["precision"] < 1.0
    assert set(metrics["by_backend"]) == {"sagemaker"}

    capsys.readouterr()
    table = tmp_path / "compare.md"
    code = main(["eval", "compare", str(tmp_path / "sequential"), str(tmp_path / "concurrent"), "--out", str(table)])
    printed = capsys.readouterr().out
    assert code == 0 and printed == table.read_text()
    assert printed.splitlines()[0].startswith("| run | strategy | event acc | task acc | macro P | macro R | none recall |")
    assert printed.splitlines()[2].startswith(f"| {tmp_path / 'sequential'} | target default | ")

    # a perfect baseline: the runs regress on task accuracy past the tolerance, and the gate says so
    baseline = tmp_path / "perfect"
    baseline.mkdir()
    perfect = runs["sequential"] | {"metrics": dict(metrics, task=dict(metrics["task"], accuracy=1.0))}
    (baseline / "report.json").write_text(json.dumps(perfect))
    code = main(["eval", "compare", str(tmp_path / "sequential"), "--gate", str(baseline)])
    err = capsys.readouterr().err
    assert code == 1 and "sequential: task accuracy" in err and "below the baseline's 1.000" in err
    assert main(["eval", "compare", str(tmp_path / "sequential"), "--gate", str(baseline), "--tolerance", "0.2"]) == 0
    assert main(["eval", "compare", str(tmp_path / "sequential"), "--gate", str(tmp_path / "concurrent")]) == 0


def refused_by_the_api() -> list[dict]:
    """Single-turn lines the API refuses whole: 51 messages (400), a body over 64 KiB (413)."""
    alternating = [{"role": ("user", "assistant")[number % 2], "content": f"message {number}"} for number in range(50)]
    long_messages = [{"role": ("user", "assistant")[number % 2], "content": "x" * 4000} for number in range(18)]
    last = {"role": "user", "content": "and now?", "expect": {"task": None, "event": "none"}}
    return [
        {"id": "fifty-one", "current_task": None, "messages": [*alternating, last]},
        {"id": "too-large", "current_task": None, "messages": [*long_messages, last]},
    ]


def test_the_local_and_url_targets_give_the_same_verdict_and_digests(local_env, served, tmp_path, capsys):
    """The in-process router refuses what the API refuses, with the API's own status and code."""
    first = DATASET.read_text().splitlines()[0]
    dataset = tmp_path / "mixed.jsonl"
    dataset.write_text("".join(line + "\n" for line in [first, *map(json.dumps, refused_by_the_api())]))
    reports = {}
    for name, target in (("local", ["local", "--tasks", str(TASKS_FILE)]), ("url", [served[0].url])):
        assert run_eval("--dataset", str(dataset), "--target", *target, "--out", str(tmp_path / name)) == 0
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
        err = capsys.readouterr().err
        assert "fifty-one" in err and "too-large" in err  # told before routing, for either target
    verdicts = {name: [(t["status"], t.get("error")) for t in report["turns"]] for name, report in reports.items()}
    assert verdicts["local"] == verdicts["url"]
    assert verdicts["local"][-2:] == [(400, "invalid_request"), (413, "request_too_large")]
    assert reports["local"]["dataset_sha256"] == reports["url"]["dataset_sha256"]
    assert reports["local"]["tasks_sha256"] == reports["url"]["tasks_sha256"] is not None


def test_a_target_that_drops_connections_is_measured_not_fatal(tmp_path, capsys):
    """Each turn that gets no answer is an `error` turn; the run goes on and writes its report."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drop_every_connection() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.recv(65536)
            connection.close()

    threading.Thread(target=drop_every_connection, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:  # no turn got an HTTP answer: exit 2, the report written all the same
        assert run_eval("--dataset", str(DATASET), "--target", url, "--out", str(tmp_path), "--concurrency", "4") == 2
    finally:
        stop.set()
    assert "no turn got an HTTP answer" in capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["turns"]) == len(TURNS) and report["metrics"]["error_rate"] == 1.0
    assert {t["status"] for t in report["turns"]} == {0}
    assert report["metrics"]["task"]["confusion"]["labels"][0] == "answer_prospect_message"
    assert report["metrics"]["task"]["confusion"]["labels"][-1] == ERROR_LABEL
    # compare reads the contract's fields alone (no invalid_output_rate needed)
    del report["metrics"]["invalid_output_rate"]
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert main(["eval", "compare", str(tmp_path)]) == 0


# -- a turn's allow-list is sent: both targets route it over those tasks only ------------------------
MINUTES_PLEASE = "Can you write up the minutes of this morning's call?"
ALLOW_LIST_LINES = [
    {"id": "allowed-email-only", "current_task": None, "messages": [  # the minutes were not allowed: none is right
        {"role": "user", "content": MINUTES_PLEASE, "tasks": ["follow_up_email"], "expect": {"task": None, "event": "none"}},
    ]},
    {"id": "every-task", "current_task": None, "messages": [
        {"role": "user", "content": MINUTES_PLEASE, "expect": {"task": "prepare_meeting_minutes", "event": "start"}},
    ]},
    {"id": "pitch-running-outside", "current_task": "create_one_minute_pitch", "messages": [
        {"role": "user", "content": MINUTES_PLEASE, "tasks": ["follow_up_email"], "expect": {"task": None, "event": "end"}},
    ]},
]  # fmt: skip


def minutes_when_allowed(received: Received) -> Reply:
    """A primary that answers the minutes when its constraint offers them (vLLM's `structured_outputs`
    `choice`: zero-shot's), none otherwise, as a model held to the choices would."""
    choices = received.json()["structured_outputs"]["choice"]
    assert last_message(received) == MINUTES_PLEASE
    return SageMakerRuntimeDouble.answer("prepare_meeting_minutes" if "prepare_meeting_minutes" in choices else "none")


def test_each_turn_is_routed_over_its_allow_list_at_either_target(local_env, served, tmp_path):
    dataset = tmp_path / "allowed.jsonl"
    dataset.write_text("".join(json.dumps(line) + "\n" for line in ALLOW_LIST_LINES))
    primaries = {"local": local_env[0], "url": served[1]}
    for name, target in (("local", ["local", "--tasks", str(TASKS_FILE)]), ("url", [served[0].url])):
        primary = primaries[name]
        oracle, received_before = primary.default, len(primary.requests)
        primary.always(minutes_when_allowed)
        try:
            assert run_eval("--dataset", str(dataset), "--target", *target, "--out", str(tmp_path / name)) == 0
        finally:
            primary.always(oracle)  # the module's make local serves other tests
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert [t["predicted"]["task"] for t in report["turns"]] == [None, "prepare_meeting_minutes", None], name
        assert report["metrics"]["task"]["accuracy"] == report["metrics"]["event"]["accuracy"] == 1.0, name
        offered = [r.json()["structured_outputs"]["choice"] for r in primary.requests[received_before:]]
        assert offered[0] == ["follow_up_email", "none"] and len(offered[1]) > 2, name
