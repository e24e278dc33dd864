"""`make local` over real HTTP: the server process, dynalite under its state folder, the API key
check, and a restart keeping the registry (CONTRACT section 3)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from .servers import OpenAIDouble

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ROUTE_BODY = {"conversation": [{"role": "user", "content": "Write up the minutes of my call"}], "current_task": None}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    def __init__(self, state_dir: Path, openai: OpenAIDouble, **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "TASKROUTER_", "OPENAI_"))
        }
        environment.update(
            PORT=str(self.port),
            TASKROUTER_LOCAL_DIR=str(state_dir),
            OPENAI_BASE_URL=openai.base_url,
            OPENAI_API_KEY="sk-local-test",
            NO_PROXY="127.0.0.1,localhost",
            **env,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "taskrouter.local.server"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line and self.process.poll() is not None:
                raise AssertionError("local server exited:\n" + "".join(self.output))
            self.output.append(line)
            if "listening on" in line:
                break
        # Keep reading its output: a full pipe would block the server on its next log line.
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()
        assert self.request("GET", "/health") == (200, {"status": "ok"})

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def dynamodb_endpoint(self) -> str:
        match = re.search(r"dynalite at (http://127\.0\.0\.1:\d+)", "".join(self.output))
        assert match, self.output
        return match.group(1)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with OPENER.open(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


@contextlib.contextmanager
def serving(state_dir: Path, answer: str, **env: str) -> Iterator[tuple[LocalServer, OpenAIDouble]]:
    """`make local` under `state_dir`, its fallback an OpenAI double always answering `answer`."""
    openai = OpenAIDouble()
    openai.always(openai.answer(answer))
    server = LocalServer(state_dir, openai, **env)
    try:
        yield server, openai
    finally:
        server.stop()
        openai.close()


@pytest.fixture(scope="module")
def openai() -> Iterator[OpenAIDouble]:
    double = OpenAIDouble()
    double.always(double.answer("prepare_meeting_minutes"))
    yield double
    double.close()


def test_serves_the_contract_with_the_fallback_from_the_environment(tmp_path, openai):
    server = LocalServer(tmp_path, openai)
    try:
        status, body = server.request("POST", "/route", ROUTE_BODY)
        assert status == 200
        assert (body["task"], body["event"], body["backend"], body["fallback_reason"]) == (
            "prepare_meeting_minutes", "start", "openai", "not_configured",
        )
        assert server.request("POST", "/route", {"conversation": []})[0] == 400
        sent = openai.requests[-1].json()
        enum = sent["response_format"]["json_schema"]["schema"]["properties"]["task"]["enum"]
        assert {"prepare_meeting_minutes", "follow_up_email", "prepare_linkedin_post",
                "structure_ideas_into_doc", "create_one_minute_pitch"} <= set(enum)
    finally:
        server.stop()


def test_api_key_is_checked_when_set(tmp_path, openai):
    server = LocalServer(tmp_path, openai, TASKROUTER_API_KEY="local-key-123")
    try:
        assert server.request("POST", "/route", ROUTE_BODY) == (403, {"message": "Forbidden"})
        assert server.request("POST", "/route", ROUTE_BODY, {"x-api-key": "wrong"})[0] == 403
        assert server.request("POST", "/route", ROUTE_BODY, {"x-api-key": "local-key-123"})[0] == 200
        assert server.request("GET", "/health") == (200, {"status": "ok"})  # health needs no key
    finally:
        server.stop()


def test_registry_is_seeded_once_and_survives_a_restart(tmp_path, openai):
    first = LocalServer(tmp_path, openai)
    try:
        assert "seeded with 9 default tasks" in "".join(first.output)
        client = boto3.client(
            "dynamodb", endpoint_url=first.dynamodb_endpoint, region_name="us-east-1",
            aws_access_key_id="local", aws_secret_access_key="local",
        )
        client.delete_item(TableName="taskrouter-local-tasks", Key={"pk": {"S": "TASK"}, "sk": {"S": "qualify_lead"}})
    finally:
        first.stop()
    assert (tmp_path / "dynalite").is_dir()

    second = LocalServer(tmp_path, openai)
    try:
        assert "registry seeded" not in "".join(second.output)
        second.request("POST", "/route", ROUTE_BODY)
        sent = openai.requests[-1].json()
        enum = sent["response_format"]["json_schema"]["schema"]["properties"]["task"]["enum"]
        assert "qualify_lead" not in enum and "send_client_information" in enum
    finally:
        second.stop()
