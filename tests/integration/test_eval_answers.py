"""`taskrouter eval` against targets that misbehave, on loopback: answers that are not the API's, a
task named like a failure, targets that trickle or hang, none at all; and its own inputs and outputs
(standard input, an output folder it cannot write, labels and turns the API would refuse)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

import pytest

from taskrouter.cli import main
from taskrouter.core.events import derive_event
from taskrouter.evaluation.metrics import ERROR_LABEL

from .servers import HttpDouble, Received, Reply

TASKS = [{"name": name, "description": f"the {name} task", "examples": []} for name in ("error", "follow_up_email")]


def answer(decided: str | None, **fields) -> Reply:
    """An answer of the API's shape deciding `decided` with nothing running, but for `fields`."""
    body = {
        "task": decided, "event": derive_event(None, decided), "backend": "openai", "fallback_reason": "not_configured",
        "confidence": None, "latency_ms": 1.5, "request_id": "r-1",
    } | fields  # fmt: skip
    return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


class RouterDouble(HttpDouble):
    """A router's API: `GET /tasks` answers TASKS, `POST /route` what `always`/`script` say."""

    def _accepts(self, received: Received) -> bool:
        return urllib.parse.urlsplit(received.path).path in ("/route", "/tasks")

    def _handle(self, received: Received) -> Reply:
        if received.method == "GET" and received.path == "/tasks":
            with self._lock:
                self._received.append(received)
            return Reply(200, json.dumps({"tasks": TASKS}).encode(), {"Content-Type": "application/json"})
        return super()._handle(received)

    @property
    def routed(self) -> list[Received]:
        return [r for r in self.requests if r.path == "/route"]


def last_message(received: Received) -> str:
    return received.json()["conversation"][-1]["content"]


@pytest.fixture
def router() -> Iterator[RouterDouble]:
    double = RouterDouble()
    yield double
    double.close()


def dataset(tmp_path, *turns: tuple[str, str | None]) -> str:
    """One single-message conversation a (message, expected task) pair."""
    lines = [
        {"id": f"c{number}", "messages": [
            {"role": "user", "content": content, "expect": {"task": task, "event": derive_event(None, task)}},
        ]}
        for number, (content, task) in enumerate(turns)
    ]  # fmt: skip
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def last_line(err: str) -> str:
    """The error a run ends with, after its warnings; no traceback anywhere."""
    assert "Traceback" not in err and err.endswith("\n"), err
    return err.splitlines()[-1]


def evaluate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- answers that are not the API's ------------------------------------------------------------------
NOT_ANSWERS: dict[str, Reply] = {
    "html": Reply(200, b"<html><body>Welcome to nginx!</body></html>", {"Content-Type": "text/html"}),
    "list": answer(None, task=["follow_up_email"], event="start"),
    "dict": answer(None, task={"name": "follow_up_email"}, event="start"),
    "number": answer(None, task=3, event="start"),
    "event": answer(None, event="begin"),
    "reserved": answer(None, task="none"),  # no task is null, never the string
    "backend": answer(None, backend="llama"),
    "missing": Reply(200, b'{"task": null}', {"Content-Type": "application/json"}),
    "array": Reply(200, b"[]", {"Content-Type": "application/json"}),
}


def test_an_answer_that_is_not_the_apis_is_an_error_turn_never_no_task(router, tmp_path, capsys):
    router.always(lambda received: NOT_ANSWERS.get(last_message(received)) or answer(None))
    path = dataset(tmp_path, *[(name, None) for name in NOT_ANSWERS], ("a proper answer", None))
    code, out, err = evaluate(capsys, "--dataset", path, "--target", router.url, "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    errors = [t for t in report["turns"] if "error" in t]
    assert len(errors) == len(NOT_ANSWERS) and all(t["status"] == 200 for t in errors)
    assert all(t["error"].startswith("invalid_answer") and t["predicted"] == {"task": None, "event": None} for t in errors)
    metrics = report["metrics"]
    assert metrics["error_rate"] == pytest.approx(len(NOT_ANSWERS) / (len(NOT_ANSWERS) + 1))
    assert metrics["task"]["per_class"]["none"] == {"precision": 1.0, "recall": 1 / 10, "f1": pytest.approx(2 / 11), "support": 10}
    assert metrics["task"]["confusion"] == {"labels": ["none", ERROR_LABEL], "matrix": [[1, 9], [0, 0]]}
    assert metrics["latency_ms"]["max"] > 0 and set(metrics["by_backend"]) == {"openai"}


# -- the primary's confidence ----------------------------------------------------------------------------
NO_CONFIDENCE = Reply(200, json.dumps({
    "task": None, "event": "none", "backend": "sagemaker", "fallback_reason": None, "latency_ms": 1.5, "request_id": "r-1",
}).encode(), {"Content-Type": "application/json"})  # fmt: skip
BAD_CONFIDENCES: dict[str, Reply] = {
    "missing": NO_CONFIDENCE,  # required: an API that drops it is not read as "no confidence"
    "above one": answer(None, confidence=1.5),
    "below zero": answer(None, confidence=-0.01),
    "a string": answer(None, confidence="0.9"),
    "a boolean": answer(None, confidence=True),
    "a list": answer(None, confidence=[0.9]),
    "nan": Reply(200, answer(None).body.replace(b'"confidence": null', b'"confidence": NaN'), {"Content-Type": "application/json"}),
    "infinity": Reply(200, answer(None).body.replace(b'"confidence": null', b'"confidence": Infinity'),
                      {"Content-Type": "application/json"}),  # fmt: skip
}


@pytest.mark.parametrize("case", list(BAD_CONFIDENCES))
def test_a_confidence_that_is_not_null_or_a_number_from_0_to_1_is_an_invalid_answer(router, tmp_path, capsys, case):
    router.always(lambda received: BAD_CONFIDENCES[case])
    code, _, err = evaluate(capsys, "--dataset", dataset(tmp_path, ("hi", None)), "--target", router.url, "--out",
                            str(tmp_path / "o"), "--no-progress")  # fmt: skip
    assert code == 0, err
    (turn,) = json.loads((tmp_path / "o" / "report.json").read_text())["turns"]
    assert turn["status"] == 200 and turn["error"].startswith("invalid_answer: confidence: "), turn
    assert turn["predicted"] == {"task": None, "event": None} and turn["confidence"] is None and "primary_task" not in turn


def test_each_turn_records_the_confidence_and_the_primarys_answer_where_the_answer_shows_it(router, tmp_path, capsys):
    """The primary's answer is the decision when the primary decided (backend sagemaker, kept or kept
    for want of a fallback); a fallback's decision hides it, though the confidence is the primary's."""
    replies = {
        "kept": answer("follow_up_email", backend="sagemaker", fallback_reason=None, confidence=0.92),
        "kept none": answer(None, backend="sagemaker", fallback_reason=None, confidence=1),
        "escalated": answer("follow_up_email", backend="openai", fallback_reason="low_confidence", confidence=0.31),
        "fallback": answer(None, backend="openai", fallback_reason="timeout", confidence=None),
    }
    router.always(lambda received: replies[last_message(received)])
    path = dataset(tmp_path, ("kept", "follow_up_email"), ("kept none", None), ("escalated", "follow_up_email"), ("fallback", None))
    code, _, err = evaluate(capsys, "--dataset", path, "--target", router.url, "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    recorded = [(t["confidence"], t.get("primary_task", "unknown")) for t in report["turns"]]
    assert recorded == [(0.92, "follow_up_email"), (1.0, None), (0.31, "unknown"), (None, "unknown")]
    calibration = report["metrics"]["calibration"]
    assert calibration["answered"] == 2 and calibration["accuracy"] == 1.0  # the two the primary's answer is known of


def test_a_task_named_error_is_just_a_task(router, tmp_path, capsys):
    def reply(received: Received) -> Reply:
        if last_message(received).startswith("fail"):
            return Reply(503, b'{"error": {"code": "no_backend_available", "message": "both failed"}}', {"Retry-After": "1"})
        return answer("error")

    router.always(reply)
    path = dataset(tmp_path, ("report the error", "error"), ("log the error", "error"), ("fail 1", "follow_up_email"), ("fail 2", "error"))
    code, _, err = evaluate(capsys, "--dataset", path, "--target", router.url, "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 0, err
    task = json.loads((tmp_path / "o" / "report.json").read_text())["metrics"]["task"]
    assert task["per_class"]["error"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert task["per_class"]["follow_up_email"]["support"] == 1 and ERROR_LABEL not in task["per_class"]
    assert task["confusion"]["labels"] == ["error", "follow_up_email", ERROR_LABEL]
    assert task["confusion"]["matrix"] == [[2, 0, 1], [0, 0, 1], [0, 0, 0]]
    markdown = (tmp_path / "o" / "report.md").read_text()
    assert f"| {ERROR_LABEL} |" in markdown


# -- deadlines -----------------------------------------------------------------------------------------
class RawServer:
    """A TCP server on loopback that reads each request and then does what `serve(connection, stop)` does."""

    def __init__(self, serve: Callable[[socket.socket, threading.Event], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._serve = serve
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):  # the client gave up: what the test wants
            connection.recv(65536)
            self._serve(connection, self._stop)

    def close(self) -> None:
        self._stop.set()
        self._accepting.join()
        self._listener.close()


def trickle(connection: socket.socket, stop: threading.Event) -> None:
    """An answer one byte a second (each read sees progress), for a minute at most."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"x" * 60:
        if stop.wait(1):
            return
        connection.sendall(bytes([byte]))


def hang(connection: socket.socket, stop: threading.Event) -> None:
    stop.wait(60)


@pytest.mark.parametrize("serve", [trickle, hang])
def test_a_trickling_or_hung_target_cannot_stretch_a_turn_past_its_deadline(tmp_path, capsys, serve):
    server = RawServer(serve)
    path = dataset(tmp_path, ("first", None), ("second", None))
    started = time.monotonic()
    try:
        code, out, err = evaluate(capsys, "--dataset", path, "--target", server.url, "--out", str(tmp_path / "o"),
                                  "--turn-timeout", "1", "--concurrency", "2", "--no-progress")  # fmt: skip
    finally:
        server.close()
    assert time.monotonic() - started < 20  # a deadline of 1 s, and one for the task list: far under a minute
    assert code == 2 and "no turn got an HTTP answer" in last_line(err), err
    turns = json.loads((tmp_path / "o" / "report.json").read_text())["turns"]
    assert [(t["status"], t["error"]) for t in turns] == [(0, "timeout: no answer within 1 s")] * 2


def test_a_target_that_is_not_there_exits_2_with_the_report_written(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens there
    code, _, err = evaluate(capsys, "--dataset", dataset(tmp_path, ("hi", None)), "--target", url, "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 2 and f"no turn got an HTTP answer from {url}" in last_line(err)
    assert json.loads((tmp_path / "o" / "report.json").read_text())["metrics"]["error_rate"] == 1.0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_turn_timeout_that_is_no_positive_number_is_a_usage_error(tmp_path, capsys, value):
    code, out, err = evaluate(capsys, "--dataset", "x.jsonl", "--target", "local", "--out", str(tmp_path), f"--turn-timeout={value}")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "--turn-timeout" in err, err


# -- the run's own inputs and outputs -----------------------------------------------------------------
def test_the_dataset_may_come_from_standard_input(router, tmp_path, capsys, monkeypatch):
    router.always(lambda received: answer(None))
    raw = open(dataset(tmp_path, ("hi", None), ("hello", None)), "rb").read()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw)))
    code, _, err = evaluate(capsys, "--dataset", "-", "--target", router.url, "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert len(report["turns"]) == 2 and report["dataset"] == "standard input"
    assert report["dataset_sha256"] == hashlib.sha256(raw).hexdigest()
    assert report["strategy"] == "target default"
    canonical = json.dumps(sorted(TASKS, key=lambda t: t["name"]), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert report["tasks_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()


def test_an_output_folder_that_cannot_be_written_fails_before_the_first_turn(router, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "report"
    code, _, err = evaluate(capsys, "--dataset", dataset(tmp_path, ("hi", None)), "--target", router.url, "--out", str(out), "--no-progress")
    assert code == 1 and err.startswith(f"taskrouter eval: --out {out}: ") and err.count("\n") == 1, err
    assert router.requests == []


def test_labels_outside_the_task_list_and_turns_the_api_would_refuse_are_told_before_routing(router, tmp_path, capsys):
    router.always(lambda received: answer(None))
    long = {"id": "long", "current_task": None, "messages": [
        {"role": "user" if number % 2 == 0 else "assistant", "content": f"message {number}"} for number in range(50)
    ] + [{"role": "user", "content": "the 51st", "expect": {"task": None, "event": "none"}}]}  # fmt: skip
    path = tmp_path / "set.jsonl"
    path.write_text(open(dataset(tmp_path, ("qualify Dana", "qualify_lead"), ("hi", None))).read() + json.dumps(long) + "\n")
    code, _, err = evaluate(capsys, "--dataset", str(path), "--target", router.url, "--out", str(tmp_path / "o"))
    assert code == 0, err
    lines = err.splitlines()
    first_progress = next(number for number, line in enumerate(lines) if line.startswith("routing turns"))
    warnings = lines[:first_progress]
    assert any("qualify_lead" in line and "not in the task list" in line for line in warnings), err
    assert any("long" in line and "conversation" in line and "would refuse" in line for line in warnings), err


@pytest.mark.parametrize("flag", ["--dataset", "--tasks"])
def test_a_file_that_cannot_be_read_is_named_with_its_flag(tmp_path, capsys, flag):
    files = {"--dataset": dataset(tmp_path, ("hi", None)), "--tasks": str(tmp_path / "tasks.json")} | {flag: str(tmp_path / "absent")}
    code, out, err = evaluate(capsys, "--dataset", files["--dataset"], "--target", "local", "--tasks", files["--tasks"],
                              "--out", str(tmp_path / "o"))  # fmt: skip
    assert (code, out) == (1, "") and err == f"taskrouter eval: {flag} {tmp_path / 'absent'}: No such file or directory\n"
