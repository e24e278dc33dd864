"""The local model server in this process, on loopback, serving the tiny random Llama that
tests/training/tiny_base.py builds (no hub): what the model server's hostile-input and limits tests
talk to, with the real HTTP server, botocore's client and raw sockets."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from taskrouter.model_server.constraints import Grammars
from taskrouter.model_server.engine import Engine
from taskrouter.model_server.limits import Limits
from taskrouter.model_server.loading import LoadedModel, load
from taskrouter.model_server.server import ModelHttpServer, ModelService
from tests.training.tiny_base import build_tiny_base

ENDPOINT = "taskrouter-local"
INVOCATIONS = f"/endpoints/{ENDPOINT}/invocations"
NEVER_ENDING = {"grammar": 'root ::= "a" root'}  # always one more token, never a complete match


def tiny_model(folder: Path) -> LoadedModel:
    return load(build_tiny_base(folder), {})


class _JoinedServer(ModelHttpServer):
    """The model server, whose connections a test's end closes and whose handler threads it waits
    for: a handler thread still freeing tensors while the interpreter exits makes torch abort it."""

    def __init__(self) -> None:
        super().__init__(0)
        self._handlers: list[tuple[threading.Thread, socket.socket]] = []
        self._handlers_lock = threading.Lock()

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        with self._handlers_lock:
            self._handlers.append((threading.current_thread(), request))
        super().process_request_thread(request, client_address)

    def close_all(self) -> None:
        self.shutdown()
        self.server_close()
        with self._handlers_lock:
            handlers = list(self._handlers)
        for thread, connection in handlers:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # a kept-alive or abandoned connection ends its handler
            except OSError:
                pass  # already closed
            thread.join(120)


class Served:
    """A model server on a free loopback port, its engine within `limits`."""

    def __init__(self, loaded: LoadedModel, limits: Limits = Limits(), *, prefix_cache: bool = True) -> None:
        self.engine = Engine(loaded, prefix_cache=prefix_cache, limits=limits)
        self.service = ModelService(self.engine, Grammars(loaded.tokenizer, loaded.vocab_size, self.engine.stop_ids),
                                    ENDPOINT, debug=True)
        self.http = _JoinedServer()
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self._clients: list[Any] = []
        self._thread = threading.Thread(target=self.http.serve, args=(self.service,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.http.close_all()
        self._thread.join(60)

    def connection(self, timeout_s: float = 120) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.http.server_port, timeout=timeout_s)

    def post(self, body: dict[str, Any], timeout_s: float = 120) -> tuple[int, dict[str, Any]]:
        """One invocation on a connection of its own: the status and the JSON answer."""
        connection = self.connection(timeout_s)
        try:
            connection.request("POST", INVOCATIONS, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def runtime(self, read_timeout_s: float = 120) -> Any:
        """botocore's sagemaker-runtime client, as the router builds it (one try)."""
        session = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1")
        config = Config(read_timeout=read_timeout_s, retries={"total_max_attempts": 1})
        client = session.client("sagemaker-runtime", endpoint_url=self.url, config=config)
        self._clients.append(client)
        return client


@contextmanager
def serving(loaded: LoadedModel, limits: Limits = Limits(), **options: Any) -> Iterator[Served]:
    served = Served(loaded, limits, **options)
    try:
        yield served
    finally:
        served.close()


class Gate:
    """Holds the model at its `at`-th forward pass (a PyTorch pre-hook, counting every pass) until
    `release`: a test then acts while a decode is known to be under way, at a known token."""

    def __init__(self, model: Any, at: int) -> None:
        self.at = at
        self.passes = 0
        self.reached = threading.Event()
        self._released = threading.Event()
        self._handle = model.register_forward_pre_hook(self._pass)

    def _pass(self, *_: Any) -> None:
        self.passes += 1
        if self.passes == self.at:
            self.reached.set()
            self._released.wait(120)

    def release(self) -> None:
        self._released.set()

    def remove(self) -> None:
        self.release()
        self._handle.remove()


def chat(content: str = "Write up the minutes of my call", **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "temperature": 0.0, **fields}
