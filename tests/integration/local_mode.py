"""`make local`'s server in a subprocess (`python -m taskrouter.local.server`, as the Makefile runs it),
started from a fresh shell's environment (no AWS, TaskRouter or OpenAI setting of this process) plus
what a test gives: shared by the local-mode tests."""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

from .servers import OpenAIDouble

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SERVER = [sys.executable, "-m", "taskrouter.local.server"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fresh_environment(state_dir: Path, port: int, **env: str) -> dict[str, str]:
    """This process's environment with no AWS, TaskRouter or OpenAI setting: a fresh shell's."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "TASKROUTER_", "OPENAI_"))
    }
    environment.update(PORT=str(port), TASKROUTER_LOCAL_DIR=str(state_dir), NO_PROXY="127.0.0.1,localhost", **env)
    return environment


class LocalServer:
    """Started and listening; its fallback `openai` (a double, with a dummy key) when given, else the
    environment's alone. `output` gathers every line it prints; `banner` is what it said until listening."""

    def __init__(
        self, state_dir: Path, openai: OpenAIDouble | None = None, *, unset: tuple[str, ...] = (),
        start_timeout_s: float = 60, **env: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        backend = {"OPENAI_BASE_URL": openai.base_url, "OPENAI_API_KEY": "sk-local-test"} if openai else {}
        environment = fresh_environment(state_dir, self.port, **{**backend, **env})
        for name in unset:
            environment.pop(name, None)
        self.process = subprocess.Popen(SERVER, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line and self.process.poll() is not None:
                raise AssertionError("local server exited:\n" + "".join(self.output))
            self.output.append(line)
            if "listening on" in line:
                break
        self.banner = "".join(self.output)
        # Keep reading its output: a full pipe would block the server on its next log line.
        threading.Thread(target=self._read_output, daemon=True).start()
        assert self.request("GET", "/health") == (200, {"status": "ok"})

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def dynamodb_endpoint(self) -> str:
        """Where its registry (dynalite) listens, as it says at start."""
        match = re.search(r"dynalite at (http://127\.0\.0\.1:\d+)", "".join(self.output))
        assert match, self.output
        return match.group(1)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, timeout_s: float = 20):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with OPENER.open(request, timeout=timeout_s) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def log_line(self, needle: str, timeout_s: float = 10) -> str:
        """The first output line holding `needle` (log lines come a moment after the answer)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.output):
                if needle in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no line with {needle!r} in:\n" + "".join(self.output))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)
