"""README.md's local sessions, run as written (the server's address aside): `make local`'s server (as in test_local_server.py),
its fallback a tiny OpenAI-compatible server of the test (OpenAIDouble) that answers like a model
would for these turns; then the README's curl session and its command-line session, each command
taken from the README's own code blocks, its answer compared with the README's `# {...}` line
(request ids and latencies aside)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import OpenAIDouble, Received
from .local_mode import LocalServer

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8080"
VARYING = ("latency_ms", "request_id")  # differ at every run; the README shows them as examples


def _blocks(after_heading: str) -> list[str]:
    """The bash code blocks of a README section, in order."""
    text = README.read_text()
    section = text[text.index(after_heading):]
    section = section[: section.find("\n## ", 1)]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def _commands_and_answers(block: str, starts: str) -> list[tuple[str, str | None]]:
    """Each command (continued over lines until a comment line), with the `# ...` line that follows it."""
    pairs, command, lines = [], [], block.splitlines()
    for line in lines + ["# end"]:
        if line.startswith(starts) or (command and not line.startswith("#") and line.strip()):
            command.append(line)
        elif command:
            answer = line[2:] if line.startswith("# ") and line != "# end" else None
            pairs.append(("\n".join(command), answer))
            command = []
    return pairs


def _model(received: Received):
    """A model's answer for the README's turns: the task the last user message asks for."""
    messages = json.loads(received.raw_body)["messages"]
    said = messages[-1]["content"].lower()
    last = said[said.rfind("user"):]  # the conversation's last user turn is at the end of the prompt
    if "follow-up" in last:
        return OpenAIDouble.answer("follow_up_email")
    if "minutes" in last:
        return OpenAIDouble.answer("prepare_meeting_minutes")
    return OpenAIDouble.answer(None)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    model = OpenAIDouble()
    model.always(_model)
    server = LocalServer(tmp_path_factory.mktemp("readme"), model)
    yield server
    server.stop()
    model.close()


def _same(expected: dict, got: dict) -> bool:
    return {k: v for k, v in expected.items() if k not in VARYING} == {k: v for k, v in got.items() if k not in VARYING}


def test_the_curl_session_answers_as_the_readme_says(local):
    (session,) = [block for block in _blocks("## Running locally") if "# terminal 2" in block]
    pairs = _commands_and_answers(session, "curl ")
    assert len(pairs) >= 4
    for command, answer in pairs:
        done = subprocess.run(["bash", "-c", command.replace(README_URL, local.url)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (command, done.stderr)
        expected = json.loads(answer.replace('"…"', '"x"'))
        got = json.loads(done.stdout)
        if "request_id" in expected:
            assert isinstance(got.get("request_id"), str) and got["request_id"], got
        assert _same(expected, got), f"{command}\nREADME: {answer}\ngot:    {done.stdout}"


def test_the_registry_sessions_run_as_written(local):
    """The /tasks curl calls, the Python client and the command line against the local server (the
    `--stage` lines need a deployed stage; the same commands run against moto in test_client_cli.py)."""
    blocks = _blocks("## The task registry")
    curl_block = next(block for block in blocks if block.lstrip().startswith("curl"))
    for command, _ in _commands_and_answers(curl_block, "curl "):
        done = subprocess.run(["bash", "-c", command.replace(README_URL, local.url)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (command, done.stderr)
        if "| head" in command:  # a listing cut short on purpose
            assert done.stdout.startswith('{"tasks":['), done.stdout
            continue
        answer = json.loads(done.stdout) if done.stdout.strip() else {}
        if "error" in answer:  # curl -s exits 0 on any status: the body tells
            assert answer["error"]["code"] == "version_conflict" and "409" in command, (command, done.stdout)
    text = README.read_text()
    section = text[text.index("## The task registry"):]
    (snippet,) = re.findall(r"```python\n(.*?)```", section[: section.find("\n## ", 1)], flags=re.S)
    assert 'TaskRouterClient(stage="dev", region="us-east-1")' in snippet
    exec(snippet.replace('TaskRouterClient(stage="dev", region="us-east-1")', f'TaskRouterClient(base_url="{local.url}")'), {})
    assert local.request("GET", "/tasks/book_demo")[1]["version"] == 2  # created, then replaced at version 1
    cli = next(block for block in blocks if ".venv/bin/taskrouter" in block)
    taskrouter = str(Path(sys.executable).parent / "taskrouter")
    ran = 0
    for line in cli.splitlines():
        if not line.startswith(".venv/bin/taskrouter --base-url"):
            continue
        command = line.split("#")[0].replace(".venv/bin/taskrouter", taskrouter).replace(README_URL, local.url)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert done.stdout.strip(), command
        ran += 1
    assert ran >= 2


def test_the_local_servers_steps_start_a_server_that_decides(tmp_path):
    """The README's block for a local OpenAI-compatible server, its variables exported as written (the
    base URL pointed at this test's tiny server, standing for Ollama), with no OPENAI_API_KEY."""
    (block,) = [b for b in _blocks("## Running locally") if "OPENAI_BASE_URL=" in b and "make local" in b]
    exported = dict(re.findall(r"^export (\w+)=(\S+)", block, flags=re.M))
    assert set(exported) == {"OPENAI_BASE_URL", "TASKROUTER_OPENAI_MODEL", "TASKROUTER_FALLBACK_TIMEOUT_MS"}
    model = OpenAIDouble()
    model.always(_model)
    others = {name: value for name, value in exported.items() if name != "OPENAI_BASE_URL"}  # the double's URL
    server = LocalServer(tmp_path, model, unset=("OPENAI_API_KEY",), **others)
    try:
        banner = "".join(server.output)
        assert exported["TASKROUTER_OPENAI_MODEL"] in banner and "20000" in banner, banner
        status, decision = server.request("POST", "/route", {"conversation": [
            {"role": "user", "content": "Can you write up the minutes of my call with Acme?"}]})
        assert status == 200 and decision["task"] == "prepare_meeting_minutes", decision
        (sent, *_) = model.requests
        assert json.loads(sent.raw_body)["model"] == exported["TASKROUTER_OPENAI_MODEL"]
    finally:
        server.stop()
        model.close()
