"""Nothing the model server loads ever leaves the machine, tried as the issue found it: `taskrouter model
serve` in a process of its own, with HTTPS_PROXY and HTTP_PROXY pointing at a proxy on loopback that
records every request it is asked to make (a CONNECT for https), and none of the hub's offline switches
set by the caller.

An adapter folder named by a relative path (as docs/local-model.md shows) that holds only
adapter_config.json (an interrupted training) made peft ask huggingface.co for the weights through the
proxy; it is now refused in one line naming what is missing, with nothing asked of the proxy. A whole
adapter, named the same way, loads and answers with nothing asked of it either. make local starts the
server with the hub's offline switches and the router's primary timeout as its deadline."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")  # the local-model extra; `make test` installs it
pytest.importorskip("peft")
pytest.importorskip("xgrammar")

from taskrouter.model_server.local import start_local_model  # noqa: E402
from tests.training.tiny_base import build_tiny_base  # noqa: E402

START_TIMEOUT_S = 300  # loading the tiny model takes seconds, more on a busy machine
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_HUB_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class RecordingProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy on loopback that forwards nothing: it records each request line it is sent
    (`CONNECT huggingface.co:443 HTTP/1.1` for an https fetch) and refuses it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.asked: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: RecordingProxy

    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        if line:
            self.server.asked.append(line)
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture(scope="module")
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base model, a whole adapter trained on nothing (saved by peft) and the config of one alone,
    the adapters under `adapters/` as the docs lay them out."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("offline")
    base = build_tiny_base(folder / "base")
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(folder / "adapters" / "whole")
    (folder / "adapters" / "interrupted").mkdir()
    (folder / "adapters" / "interrupted" / "adapter_config.json").write_bytes(
        (folder / "adapters" / "whole" / "adapter_config.json").read_bytes()
    )
    return folder


def _environment(proxy: RecordingProxy) -> dict[str, str]:
    """This process's environment with every request routed through the proxy and no offline switch."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in _HUB_SWITCHES and name.lower() != "no_proxy"}
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        environment[name] = proxy.url
    return environment


def _serve(workdir: Path, proxy: RecordingProxy, adapters: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "taskrouter.model_server", "serve", "--model", "base", "--adapters", adapters,
               "--port", "0"]
    return subprocess.Popen(command, cwd=workdir, env=_environment(proxy), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_an_adapter_folder_without_weights_is_refused_in_one_line_and_nothing_is_fetched(workdir, proxy) -> None:
    proxy.asked.clear()
    server = _serve(workdir, proxy, "example=adapters/interrupted")

    _, stderr = server.communicate(timeout=START_TIMEOUT_S)

    assert proxy.asked == []
    assert server.returncode == 1 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("taskrouter model: adapter example: ")
    assert f"{workdir / 'adapters' / 'interrupted'} has no adapter_model.safetensors or adapter_model.bin" in stderr


def test_a_whole_adapter_by_a_relative_path_loads_and_answers_with_nothing_fetched(workdir, proxy) -> None:
    proxy.asked.clear()
    server = _serve(workdir, proxy, "example=adapters/whole")
    try:
        url = _ready_url(server)
        body = {"messages": [{"role": "user", "content": "minutes please"}], "max_tokens": 2}
        request = urllib.request.Request(f"{url}/endpoints/taskrouter-local/invocations", json.dumps(body).encode(),
                                         {"Content-Type": "application/json",
                                          "X-Amzn-SageMaker-Inference-Component": "example"})
        with _NO_PROXY.open(request, timeout=120) as response:
            answer = json.loads(response.read())
    finally:
        server.terminate()
        server.communicate(timeout=60)

    assert answer["model"] == "example" and answer["usage"]["completion_tokens"] <= 2
    assert proxy.asked == []


def test_make_local_starts_the_server_offline_with_the_routers_primary_timeout_as_its_deadline(workdir) -> None:
    environ = {name: value for name, value in os.environ.items()
               if name not in _HUB_SWITCHES and not name.startswith("TASKROUTER_")}
    environ |= {"TASKROUTER_LOCAL_MODEL": str(workdir / "base"), "TASKROUTER_PRIMARY_TIMEOUT_MS": "3000",
                "TASKROUTER_PRIMARY_TIMEOUT_MS_FEW_SHOT_COT": "4000", "TASKROUTER_PRIMARY_TIMEOUT_MS_REACT": "2500"}

    started = start_local_model(environ)
    try:
        arguments, items = _program_of(started.process.pid)
    finally:
        started.stop()
    server_environ = dict(item.split("=", 1) for item in items if "=" in item)

    assert server_environ["HF_HUB_OFFLINE"] == "1" and server_environ["TRANSFORMERS_OFFLINE"] == "1"
    assert arguments[arguments.index("--deadline-ms") + 1] == "4000"


def _program_of(pid: int) -> tuple[list[str], list[str]]:
    """A process's arguments and environment, once its program has them: Popen can return while the
    kernel is still setting up the new program, when /proc shows both empty for a moment."""
    for _ in range(1000):
        arguments = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        environment = Path(f"/proc/{pid}/environ").read_text().split("\0")
        if arguments[0] and environment[0]:
            return arguments, environment
        threading.Event().wait(0.01)
    raise AssertionError(f"process {pid} never showed its program")


def _ready_url(server: subprocess.Popen) -> str:
    """The URL the server says it listens at once loaded (its `ready` line on stderr)."""
    assert server.stderr is not None
    for line in server.stderr:
        if "model server ready at " in line:
            return line.split(" ready at ")[1].split()[0]
    raise AssertionError(f"the model server exited ({server.wait()}) without being ready")
