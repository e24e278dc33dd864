"""`make local` with TASKROUTER_LOCAL_MODEL: one model server on loopback, loaded once for every Lambda
container, and the primary pointed at it as at the stage's endpoint.

`start_local_model` runs before `make local` reads its settings: it sets what the router needs to find
the server (unless the user set it), then starts the server, which loads while dynalite and the
containers start; `wait_ready` holds the banner until the model answers. A model on a CPU takes
seconds where the stage's GPU takes milliseconds, so in this mode the primary's timeouts are 10 s (the
settings' highest) and the fallback never starts beside a primary still decoding, unless set.

The server stops a request at its deadline, unless TASKROUTER_MODEL_DEADLINE_MS says otherwise the
router's longest primary timeout: past it the router has given up on the answer (and a frozen
container's connection, still open, would not tell the server so). It runs with the hub's offline
switches set (cli.OFFLINE).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path

from taskrouter.adapters.settings import (
    DEFAULT_TIMEOUTS_MS, PRIMARY_TIMEOUT_MS, SettingsError, number_setting, timeout_setting,
)  # fmt: skip
from taskrouter.model_server.cli import DEFAULT_ENDPOINT, OFFLINE
from taskrouter.model_server.limits import DEADLINE_VARIABLE

MODEL = "TASKROUTER_LOCAL_MODEL"
ADAPTERS = "TASKROUTER_LOCAL_ADAPTERS"
LOCAL_TIMEOUT_MS = "10000"
START_TIMEOUT_S = 600.0  # loading and de-quantizing takes seconds alone, minutes on a busy machine
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def local_model_defaults(url: str) -> dict[str, str]:
    """What the router needs to use a local model server at `url`, each the user's when set, but
    the URL, which must be this server's."""
    return {
        "TASKROUTER_SAGEMAKER_ENDPOINT": DEFAULT_ENDPOINT,
        "AWS_ACCESS_KEY_ID": "local",  # botocore signs every call; the server checks no signature
        "AWS_SECRET_ACCESS_KEY": "local",
        "TASKROUTER_PRIMARY_TIMEOUT_MS": LOCAL_TIMEOUT_MS,
        "TASKROUTER_PRIMARY_TIMEOUT_MS_FEW_SHOT_COT": LOCAL_TIMEOUT_MS,
        "TASKROUTER_PRIMARY_TIMEOUT_MS_REACT": LOCAL_TIMEOUT_MS,
        "TASKROUTER_HEDGE_AFTER_MS": "off",
    }


class LocalModel:
    """The model server `make local` started, or none (TASKROUTER_LOCAL_MODEL unset)."""

    def __init__(self, process: subprocess.Popen | None = None, url: str | None = None) -> None:
        self.process = process
        self.url = url

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Back once the server answers; a server that exits or never answers ends make local in one line."""
        if self.process is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the local model server exited ({self.process.returncode}): see its lines above")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with _OPENER.open(f"{self.url}/ping", timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise SystemExit(f"the local model server did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_local_model(environ: MutableMapping[str, str]) -> LocalModel:
    """When TASKROUTER_LOCAL_MODEL is set: the primary configured for a local server (see
    `local_model_defaults`) and the server started on a free port, loading; else nothing."""
    model = environ.get(MODEL)
    if not model:
        return LocalModel()
    if not Path(model).expanduser().exists():
        raise SystemExit(f"{MODEL}={model}: no such file or folder (a model folder or a GGUF file; "
                         "`taskrouter model path` prints the one set-up installs)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    for name, value in local_model_defaults(url).items():
        environ.setdefault(name, value)
    environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = url
    command = [sys.executable, "-m", "taskrouter.model_server", "serve", "--model", model, "--port", str(port),
               "--endpoint", environ["TASKROUTER_SAGEMAKER_ENDPOINT"], "--stop-with-parent"]
    if environ.get(ADAPTERS):
        command += ["--adapters", environ[ADAPTERS]]
    if not environ.get(DEADLINE_VARIABLE):
        command += ["--deadline-ms", str(primary_timeout_ms(environ))]
    # Its lines go to stderr with make local's own notes: stdout is the banner's.
    process = subprocess.Popen(command, stdout=sys.stderr, stderr=sys.stderr, env={**environ, **OFFLINE})
    started = LocalModel(process, url)
    atexit.register(started.stop)
    return started


def primary_timeout_ms(environ: MutableMapping[str, str]) -> int:
    """The router's longest primary timeout, of every strategy (one that does not read as a setting
    counts as the settings' highest: the router itself then refuses to start, saying why)."""
    longest = 0.0
    for strategy, (default_ms, _) in DEFAULT_TIMEOUTS_MS.items():
        try:
            longest = max(longest, number_setting(environ, timeout_setting("PRIMARY", strategy), default_ms,
                                                  *PRIMARY_TIMEOUT_MS))
        except SettingsError:
            longest = PRIMARY_TIMEOUT_MS[1]
    return max(1, round(longest))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
