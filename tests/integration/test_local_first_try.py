"""A decision on the first try (issue 12): `make local` says at start where it listens, which backends
can decide and what to set to change that, whether the key check is on, and the timeouts; a request
that no backend can serve says why in its 503 and in the log; a port in use is one line; the
functions' log lines are text a person reads (the Lambda's JSON stays for AWS)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .local_mode import SERVER, LocalServer, free_port as _free_port, fresh_environment as _environment
from .servers import OpenAIDouble

ROUTE_BODY = {"conversation": [{"role": "user", "content": "Write up the minutes of my call with Acme"}]}
CONTENT = "minutes of my call with Acme"  # never in a 503 or a log line


class Local(LocalServer):
    """The server with no backend of this test's unless given in `env`."""

    def __init__(self, state_dir: Path, **env: str) -> None:
        super().__init__(state_dir, None, **env)

    @property
    def lines(self) -> list[str]:
        return self.output

    def route(self, body: Any = ROUTE_BODY) -> tuple[int, dict[str, Any]]:
        return self.request("POST", "/route", body)


def _assert_readable(lines: list[str]) -> None:
    """(e) No raw JSON object on any line; the routing log lines are text with key=value fields."""
    for line in lines:
        assert not line.lstrip().startswith("{"), f"a raw JSON log line: {line!r}"
    assert not any(CONTENT in line for line in lines)


def _message(answer: tuple[int, dict[str, Any]]) -> str:
    status, body = answer
    assert status == 503 and body["error"]["code"] == "no_backend_available", answer
    assert CONTENT not in body["error"]["message"]
    return body["error"]["message"]


# -- (a) no backend -------------------------------------------------------------------------------
def test_with_no_backend_the_banner_and_the_503_say_what_to_set(tmp_path):
    server = Local(tmp_path)
    try:
        banner = server.banner
        assert f"http://127.0.0.1:{server.port}" in banner
        assert re.search(r"primary: +not configured \(set TASKROUTER_SAGEMAKER_ENDPOINT", banner), banner
        assert re.search(r"fallback: +not configured \(set OPENAI_API_KEY .*OPENAI_BASE_URL", banner), banner
        assert re.search(r"API key: +off \(set TASKROUTER_API_KEY", banner), banner
        assert "fallback 3000 ms (TASKROUTER_FALLBACK_TIMEOUT_MS)" in banner
        assert f"state:    {tmp_path} (TASKROUTER_LOCAL_DIR)" in banner
        assert "every POST /route answers 503" in banner
        assert "OPENAI_API_KEY=" not in banner and "sk-" not in banner

        message = _message(server.route())
        assert message == (
            "no backend could decide: primary not configured (TASKROUTER_SAGEMAKER_ENDPOINT unset); "
            "fallback not configured (set OPENAI_API_KEY, or OPENAI_BASE_URL for a local OpenAI-compatible server)"
        )
        refused = server.log_line("refused")
        assert "WARNING" in refused and "status=503" in refused and "code=no_backend_available" in refused
        assert message in refused  # the log carries the same cause
        assert "request_id=" in refused
        _assert_readable(server.lines)
    finally:
        server.stop()


# -- (b) a local OpenAI-compatible server --------------------------------------------------------
def test_a_local_openai_compatible_server_decides_and_the_banner_names_it(tmp_path):
    """OPENAI_BASE_URL alone, as for Ollama or llama.cpp's server: a placeholder key is sent."""
    model_server = OpenAIDouble()
    model_server.always(model_server.answer("prepare_meeting_minutes"))
    server = Local(tmp_path, OPENAI_BASE_URL=model_server.base_url, TASKROUTER_OPENAI_MODEL="llama3.2:1b")
    try:
        assert f"fallback: model llama3.2:1b (TASKROUTER_OPENAI_MODEL) at {model_server.base_url}" in server.banner
        assert "placeholder key" in server.banner
        assert "every POST /route answers 503" not in server.banner

        status, body = server.route()
        assert status == 200, body
        assert (body["task"], body["event"], body["backend"], body["fallback_reason"]) == (
            "prepare_meeting_minutes", "start", "openai", "not_configured",
        )
        sent = model_server.requests[-1]
        assert sent.json()["model"] == "llama3.2:1b"
        assert sent.header("Authorization") == "Bearer unused-local-placeholder"
        routed = server.log_line(" routed ")
        assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} INFO +routed ", routed), routed
        for field in ("backend=openai", "event=start", "fallback_reason=not_configured", "strategy=zero_shot",
                      f"request_id={body['request_id']}"):  # fmt: skip
            assert field in routed, routed
        _assert_readable(server.lines)
    finally:
        server.stop()
        model_server.close()


# -- (c) a bad key, a slow model ------------------------------------------------------------------
def test_a_rejected_key_and_a_slow_model_each_get_a_503_that_says_so(tmp_path):
    model_server = OpenAIDouble()
    server = Local(
        tmp_path, OPENAI_BASE_URL=model_server.base_url, OPENAI_API_KEY="sk-not-a-real-key",
        TASKROUTER_FALLBACK_TIMEOUT_MS="700",
    )  # fmt: skip
    try:
        assert "key from OPENAI_API_KEY" in server.banner and "sk-not-a-real-key" not in server.banner
        assert "fallback 700 ms (TASKROUTER_FALLBACK_TIMEOUT_MS)" in server.banner

        rejected = model_server.error(401, "invalid_request_error", "Incorrect API key provided", "invalid_api_key")
        model_server.always(rejected)
        message = _message(server.route())
        assert message == (
            "no backend could decide: primary not configured (TASKROUTER_SAGEMAKER_ENDPOINT unset); "
            f"fallback failed: authentication error (HTTP 401 from {model_server.base_url}; check OPENAI_API_KEY)"
        )
        assert message in server.log_line("authentication error")

        model_server.always(model_server.answer("prepare_meeting_minutes", delay_s=3))
        message = _message(server.route())
        assert message.endswith("; fallback timed out after 700 ms (TASKROUTER_FALLBACK_TIMEOUT_MS)"), message
        assert message in server.log_line("fallback timed out")
        _assert_readable(server.lines)
    finally:
        server.stop()
        model_server.close()


# -- (d) the port in use --------------------------------------------------------------------------
def test_a_port_in_use_is_one_line_and_a_failure_status(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            SERVER, env=_environment(tmp_path, port), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(rf"port {port} is in use: set PORT to a free one, e\.g\. PORT=\d+ make local", lines[0])
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "dynalite").exists()  # said before anything started
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"PORT": "eighty"}, "PORT must be a whole number from 0 to 65535, got 'eighty'"),
        ({"TASKROUTER_FALLBACK_TIMEOUT_MS": "3s"}, "cannot start: TASKROUTER_FALLBACK_TIMEOUT_MS must be a number, got '3s'"),
        ({"TASKROUTER_LOCAL_CONTAINERS": "0"}, "TASKROUTER_LOCAL_CONTAINERS must be a whole number from 1 to 64, got '0'"),
    ],
)
def test_a_setting_it_cannot_use_is_one_line(tmp_path, env, said):
    environment = _environment(tmp_path, _free_port())
    environment.update(env)
    result = subprocess.run(
        SERVER, env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and said in result.stderr, result.stderr
