"""`taskrouter review`'s server in a thread of the test, on loopback, and a client that speaks to it
as its page does (the page's token, JSON bodies): shared by the review tests."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskrouter.review.server import make_server
from taskrouter.review.store import ReviewStore

ROOT = Path(__file__).resolve().parents[2]
TASKS = [t["name"] for t in json.loads((ROOT / "tasks" / "default_tasks.json").read_text())["tasks"]]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def example_copy(folder: Path) -> Path:
    """The repository's example dataset, copied to `folder/set.jsonl`."""
    source = folder / "set.jsonl"
    shutil.copy(ROOT / "datasets" / "example.jsonl", source)
    return source


def refuse_writes(monkeypatch: Any) -> None:
    """The disk refuses every write from now on (a full disk): what root's permissions cannot fake."""

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)


def reviewed(store: ReviewStore) -> list[dict]:
    """The conversations of the reviewed copy, as on disk."""
    return [json.loads(line) for line in store.reviewed.read_text().splitlines()]


def ids(conversations: list[dict]) -> list[str]:
    return [conversation["id"] for conversation in conversations]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class ReviewServer:
    url: str  # http://127.0.0.1:PORT/
    store: ReviewStore

    @property
    def token(self) -> str:
        """The token the page carries, read from the page as a browser would get it."""
        return re.search(r'const TOKEN = "([^"]+)"', self.get("/").body.decode())[1]

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return self.send("GET", path, headers=headers)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Answer:
        """An edit as the page posts it: its token, a JSON body (bytes are sent as they are)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        wanted = {"Content-Type": "application/json", "X-Review-Token": self.token, **(headers or {})}
        return self.send("POST", path, data, wanted)

    def send(self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
        request = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method, headers=headers or {})
        try:
            with OPENER.open(request, timeout=30) as response:
                return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


@contextlib.contextmanager
def serving(store: ReviewStore) -> Iterator[ReviewServer]:
    server = make_server(store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ReviewServer(f"http://127.0.0.1:{server.server_port}/", store)
    finally:
        server.shutdown()
        server.server_close()
