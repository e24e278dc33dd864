"""`taskrouter data generate` against a fake OpenAI-compatible server: labels from the plan, the same
seed giving the same file, near-duplicates dropped, answers off the plan retried then dropped; and
the tool never loses a dataset: an existing file replaced only with --force, nothing written when
nothing is kept, deadlines a slow server cannot stretch, one line for each mistake."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from taskrouter.cli import main
from taskrouter.core.events import derive_event
from taskrouter.core.task_spec import load_task_file
from taskrouter.datagen.generate import SCENARIOS, plans
from taskrouter.evaluation.dataset import load_dataset

from .servers import OpenAIDouble, Received, Reply

TASKS_FILE = Path(__file__).resolve().parents[2] / "tasks" / "default_tasks.json"
BROKEN_TASK = "answer_prospect_message"  # the fake answers plans with it off the plan (one user turn short)
FAILING_TASK = "qualify_lead"  # the fake's server fails on plans that start with it


def fake_model(received: Received) -> Reply:
    """A deterministic model: its words are a function of what it is asked (the plan's turns and
    writer) and the seed. It writes the same words for every no-task plan, whoever writes: those
    are near-duplicates. It fails (500) on plans that start with FAILING_TASK."""
    body = received.json()
    assert body["response_format"]["json_schema"]["strict"] is True
    prompt = body["messages"][-1]["content"]
    intents = json.loads(re.search(r"Plan as JSON: (\[.*\])", prompt).group(1))
    if intents[0] == FAILING_TASK:
        return OpenAIDouble.server_error()
    writer = re.search(r"The user: (.*)\.\n", prompt).group(1)
    messages = []
    for number, intent in enumerate(intents):
        if intent is None:
            text = "whats the weather tomorrow"
        else:
            text = f"hey can u do the {intent.replace('_', ' ')} thing, says {writer} (turn {number}, take {body['seed'] % 7})"
        messages.append({"role": "user", "content": text})
        if number < len(intents) - 1:
            messages.append({"role": "assistant", "content": "Sure, here it is."})
    if BROKEN_TASK in intents and len(intents) > 1:
        messages = messages[:1]
    return OpenAIDouble.completion(json.dumps({"messages": messages}))


@pytest.fixture
def model(monkeypatch):
    double = OpenAIDouble()
    double.always(fake_model)
    monkeypatch.setenv("OPENAI_BASE_URL", double.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generate")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield double
    double.close()


def generate(out: Path, seed: int, capsys) -> tuple[str, str]:
    code = main(["data", "generate", "--out", str(out), "--per-scenario", "6", "--seed", str(seed), "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_labels_come_from_the_plan_and_near_duplicates_are_dropped(model, tmp_path, capsys):
    out = tmp_path / "synthetic.jsonl"
    printed, told = generate(out, 1, capsys)
    planned = plans(load_task_file(TASKS_FILE, updated_at=""), SCENARIOS, 6, 1)
    conversations = load_dataset(out)  # the dataset format, every event consistent with its task
    by_id = {plan.id: plan for plan in planned}
    for conversation in conversations:
        plan = by_id[conversation.id]
        labels = [m.expect for m in conversation.messages if m.role == "user"]
        assert [label.task for label in labels] == list(plan.intents)
        running = None
        for label in labels:
            assert label.event == derive_event(running, label.task)
            running = label.task
    # every no-task plan after the first is a near-duplicate; plans with the broken task over two
    # turns are off the plan even on a retry; plans starting with the failing task are lost alone
    failed = sum(plan.intents[0] == FAILING_TASK for plan in planned)
    unusable = sum(BROKEN_TASK in plan.intents and len(plan.intents) > 1 and plan.intents[0] != FAILING_TASK for plan in planned)
    duplicates = sum(plan.intents == (None,) for plan in planned) - 1
    assert len(conversations) == len(planned) - duplicates - unusable - failed
    assert duplicates > 0 and unusable > 0 and failed > 0
    assert f"{duplicates} near-duplicates and {unusable} answers off the plan dropped" in printed
    assert f"{failed} plans failed, first: InternalServerError" in told
    writers = {plan.writer for plan in planned}
    assert len(writers) > 10 and any("French" in writer for writer in writers)  # plans vary who writes


def test_the_same_seed_gives_the_same_file(model, tmp_path, capsys):
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    generate(first, 3, capsys)
    generate(again, 3, capsys)
    generate(other, 4, capsys)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "generate", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def one_line_error(capsys, *args: str, code: int = 1) -> str:
    """The one line a mistake gets on stderr, with its exit status; nothing on stdout."""
    told = run(capsys, *args)
    assert told[:2] == (code, "") and told[2].count("\n") == 1, told
    return told[2]


SMALL_RUN = ("--per-scenario", "1", "--scenarios", "start,none", "--seed", "1", "--no-progress")


def test_bad_arguments_are_one_line_and_exit_2(model, tmp_path, capsys):
    out = str(tmp_path / "x.jsonl")
    assert "--scenarios" in one_line_error(capsys, "--out", out, "--scenarios", "start,maybe", code=2)
    for value in ("nan", "inf", "-inf", "-1", "warm"):
        told = one_line_error(capsys, "--out", out, f"--temperature={value}", code=2)
        assert f"--temperature: takes a finite number >= 0, not {value!r}" in told
    for flag in ("--request-timeout", "--deadline"):
        for value in ("0", "nan", "inf"):
            assert f"{flag}: takes a finite number > 0" in one_line_error(capsys, "--out", out, f"{flag}={value}", code=2)
    assert model.requests == [] and os.listdir(tmp_path) == []


def test_an_existing_dataset_is_replaced_only_with_force(model, tmp_path, capsys):
    out = tmp_path / "synthetic.jsonl"
    out.write_text("precious\n")
    told = one_line_error(capsys, "--out", str(out), *SMALL_RUN)
    assert told == f"taskrouter data generate: --out {out} exists: give --force to replace it, or another --out\n"
    assert out.read_text() == "precious\n" and model.requests == []  # refused before the first request
    code, printed, _ = run(capsys, "--out", str(out), "--force", *SMALL_RUN)
    assert code == 0 and printed.startswith(f"2 conversations written to {out}")
    assert len(load_dataset(out)) == 2 and os.listdir(tmp_path) == ["synthetic.jsonl"]


def test_a_run_that_keeps_nothing_writes_nothing(model, tmp_path, capsys):
    model.always(OpenAIDouble.completion(json.dumps({"messages": []})))  # every answer off the plan
    kept, new = tmp_path / "kept.jsonl", tmp_path / "new.jsonl"
    kept.write_text("precious\n")
    for out, force in ((kept, ("--force",)), (new, ())):
        code, printed, told = run(capsys, "--out", str(out), *force, *SMALL_RUN)
        assert (code, printed) == (1, "")
        assert told == f"taskrouter data generate: no conversation kept: nothing written to {out}\n"
    assert kept.read_text() == "precious\n" and os.listdir(tmp_path) == ["kept.jsonl"]


def test_a_file_created_during_the_run_is_not_replaced(model, tmp_path, capsys):
    out = tmp_path / "synthetic.jsonl"

    def someone_else_writes_meanwhile(received: Received) -> Reply:
        if not out.exists():
            out.write_text("someone else's\n")
        return fake_model(received)

    model.always(someone_else_writes_meanwhile)
    code, printed, told = run(capsys, "--out", str(out), *SMALL_RUN)
    assert (code, printed) == (1, "")
    assert f"--out {out} was created by something else during the run: nothing written; give --force" in told
    assert out.read_text() == "someone else's\n" and os.listdir(tmp_path) == ["synthetic.jsonl"]


def test_out_must_be_a_file_in_a_folder(model, tmp_path, capsys):
    folder, pipe = tmp_path / "datasets", tmp_path / "pipe"
    folder.mkdir()
    os.mkfifo(pipe)
    for force in ((), ("--force",)):
        assert f"--out {folder} is a folder: give a file in it" in one_line_error(capsys, "--out", str(folder), *force, *SMALL_RUN)
        assert "is not a regular file" in one_line_error(capsys, "--out", str(pipe), *force, *SMALL_RUN)
    assert "is not a folder" in one_line_error(capsys, "--out", str(tmp_path / "no" / "x.jsonl"), *SMALL_RUN)
    assert model.requests == [] and sorted(os.listdir(tmp_path)) == ["datasets", "pipe"] and os.listdir(folder) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any folder")
def test_a_folder_it_cannot_write_in_is_told_before_the_first_request(model, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert "no permission to write in" in one_line_error(capsys, "--out", str(locked / "x.jsonl"), *SMALL_RUN)
    assert model.requests == []


@pytest.mark.parametrize(("content", "told"), [("", "is empty"), (" \n", "is empty"), ('{"tasks": []}', "has no tasks")])
def test_a_task_file_without_tasks_is_one_line(model, tmp_path, capsys, content, told):
    tasks, out = tmp_path / "tasks.json", tmp_path / "x.jsonl"
    tasks.write_text(content)
    assert f"--tasks {tasks} {told}" in one_line_error(capsys, "--out", str(out), "--tasks", str(tasks), *SMALL_RUN)
    assert model.requests == [] and os.listdir(tmp_path) == ["tasks.json"]


def test_out_dash_is_standard_output(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, printed, told = run(capsys, "--out", "-", *SMALL_RUN)
    assert code == 0 and told.startswith("2 conversations written to standard output")
    assert run(capsys, "--out", "file.jsonl", *SMALL_RUN)[0] == 0
    assert printed == (tmp_path / "file.jsonl").read_text() and os.listdir(tmp_path) == ["file.jsonl"]


def test_the_run_deadline_writes_what_was_kept_and_says_so(model, tmp_path, capsys):
    def no_answer_for_no_task(received: Received) -> Reply:
        if "Plan as JSON: [null]" in received.json()["messages"][-1]["content"]:
            return OpenAIDouble.completion("{}", delay_s=3600)  # until the test ends
        return fake_model(received)

    model.always(no_answer_for_no_task)
    out = tmp_path / "synthetic.jsonl"
    started = time.monotonic()
    code, printed, told = run(capsys, "--out", str(out), *SMALL_RUN, "--deadline", "5", "--request-timeout", "600")
    assert time.monotonic() - started < 60  # generous: the deadline is the behaviour under test
    assert code == 1 and printed.startswith(f"1 conversations written to {out}")
    assert told == "taskrouter data generate: --deadline 5 s reached with 1 of 2 plans unfinished; raise it to finish them\n"
    assert [[m.expect.task for m in c.messages if m.role == "user"] for c in load_dataset(out)] == [
        [plan.intents[0]] for plan in plans(load_task_file(TASKS_FILE, updated_at=""), ["start"], 1, 1)
    ]


@contextmanager
def trickling_server(body: bytes, byte_every_s: float) -> Iterator[str]:
    """An OpenAI-compatible server that sends its answer one byte at a time: each read the client
    makes returns well within a read timeout; the whole answer takes len(body) * byte_every_s."""
    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if stop.wait(byte_every_s):
                        break
            except OSError:
                pass  # the client gave up: what the test expects
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_server_trickling_its_answer_cannot_hold_a_request_past_its_deadline(model, tmp_path, capsys, monkeypatch):
    answer = fake_model(Received("POST", OpenAIDouble.PATH, {}, json.dumps(
        {"response_format": {"json_schema": {"strict": True}}, "seed": 1,
         "messages": [{"content": 'The user: a founder.\nPlan as JSON: ["follow_up_email"]'}]}
    ).encode())).body  # fmt: skip
    out = tmp_path / "synthetic.jsonl"
    with trickling_server(answer, byte_every_s=0.1) as url:  # the whole answer: 40 s and more
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        started = time.monotonic()
        code, printed, told = run(capsys, "--out", str(out), *SMALL_RUN, "--request-timeout", "2")
        assert time.monotonic() - started < len(answer) * 0.1 / 2  # generous: the deadline is the behaviour
    assert (code, printed) == (1, "")
    assert "2 plans failed, first: RequestTimedOut: no whole answer within 2 s" in told
    assert "2 requests got no whole answer within --request-timeout 2 s; raise it for a slow server" in told
    assert told.endswith(f"no conversation kept: nothing written to {out}\n") and not out.exists()


def test_ctrl_c_writes_nothing_and_is_one_line(model, tmp_path):
    model.always(OpenAIDouble.completion("{}", delay_s=3600))  # no answer until the test ends
    out = tmp_path / "synthetic.jsonl"
    # Ctrl-C as a terminal delivers it: the command's SIGINT handled, whatever this process inherited (a
    # background job of a non-interactive shell, as CI may start `make test`, ignores SIGINT, and its
    # children with it).
    command = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "from taskrouter.cli import main; sys.exit(main(sys.argv[1:]))"]
    running = subprocess.Popen(
        [*command, "data", "generate", "--out", str(out), *SMALL_RUN],
        env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        waited = time.monotonic()
        while not model.requests and running.poll() is None and time.monotonic() - waited < 60:
            time.sleep(0.05)  # until a request is in flight
        running.send_signal(signal.SIGINT)
        printed, told = running.communicate(timeout=60)
    finally:
        running.kill()
    assert (running.returncode, printed, told) == (130, "", "taskrouter data generate: interrupted: nothing written\n")
    assert os.listdir(tmp_path) == []
