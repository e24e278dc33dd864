"""The fallback's call ends by its timeout in total (adapters/deadline_transport.py): the official
client's `timeout` bounds each read alone, so a server trickling its answer, or its headers, a byte
at a time would otherwise hold a decision for as long as it likes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from taskrouter.adapters.openai_backend import OpenAIBackend
from taskrouter.core.backends import BackendTimeout
from taskrouter.core.prompting import RoutingPrompt, build_prompt
from taskrouter.core.request import Message, Strategy
from taskrouter.core.tasks import Task

ANSWER = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"task": "none"}'}, "finish_reason": "stop"}],
}).encode()  # fmt: skip
HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER)


class Trickling:
    """A loopback server that reads a request, then sends `head` at once and the rest of its answer
    one byte every `every_s`, far slower than any deadline here, never silent long enough for a
    read timeout."""

    def __init__(self, head: bytes, rest: bytes, every_s: float = 0.05) -> None:
        self.head, self.rest, self.every_s = head, rest, every_s
        self.requests = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        """Each request on the connection (the client keeps it alive), read whole, body included:
        a server closing on an unread body resets the connection, and the client would see that,
        not the answer."""
        with connection:
            received = b""
            while True:
                while b"\r\n\r\n" not in received:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return  # the client closed the connection
                    received += chunk
                head, _, received = received.partition(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))  # fmt: skip
                while len(received) < length:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    received += chunk
                received = received[length:]
                self.requests += 1
                try:
                    connection.sendall(self.head)
                    for byte in self.rest:
                        if self._stop.wait(self.every_s):
                            return
                        connection.sendall(bytes([byte]))
                except OSError:
                    return  # the client hung up: its deadline passed

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


def prompt() -> RoutingPrompt:
    tasks = {"follow_up_email": Task("follow_up_email", "Draft a follow-up email after a call.")}
    return build_prompt(Strategy.ZERO_SHOT, [Message(role="user", content="send Dana a follow-up")], tasks, None)


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIBackend]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-trickle")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield OpenAIBackend("m", lambda: None)


@pytest.mark.parametrize(
    ("head", "rest"),
    [(HEADERS, ANSWER), (b"", HEADERS + ANSWER)],
    ids=["trickling-body", "trickling-headers"],
)
def test_a_trickling_server_cannot_hold_a_decision_past_its_timeout(backend, monkeypatch, head, rest):
    server = Trickling(head, rest)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    try:
        backend.warm()  # the client is built at start-up, as in the container
        started = time.monotonic()
        with pytest.raises(BackendTimeout):
            backend.decide(prompt(), timeout_s=1.0)
        took = time.monotonic() - started
        assert server.requests == 1
        assert took < 1.0 + 1.0, f"the decision took {took:.2f} s for a 1 s timeout"
    finally:
        server.close()


def test_a_prompt_answer_within_the_deadline_is_taken(backend, monkeypatch):
    server = Trickling(HEADERS + ANSWER, b"")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    try:
        assert backend.decide(prompt(), timeout_s=2.0).task is None  # {"task": "none"}
        assert backend.decide(prompt(), timeout_s=2.0).task is None  # a second request, its own deadline
    finally:
        server.close()
