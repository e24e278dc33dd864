"""`taskrouter review FILE`: a page on loopback to review a labelled dataset, one conversation at a
time: the conversation on one side, its labels on the other; next and back, change a label, flag
for another look, remove. Every edit is saved at once in the reviewed copy (`store.py`).

    taskrouter review FILE.jsonl [--tasks FILE] [--port P] [--reviewed FILE]

The page's edits carry a token that only the page knows, so another site open in the same browser
cannot post edits to this loopback server.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskrouter.core.task_spec import load_task_file
from taskrouter.core.validation import describe
from taskrouter.review.store import ReviewStore
from taskrouter.repository import DEFAULT_TASKS_FILE

MAX_EDIT_BYTES = 64 * 1024


def make_server(store: ReviewStore, port: int = 0) -> ThreadingHTTPServer:
    token = secrets.token_urlsafe(24)
    page = resources.files("taskrouter.review").joinpath("page.html").read_text(encoding="utf-8")
    page = page.replace("__REVIEW_TOKEN__", token)

    class Handler(BaseHTTPRequestHandler):
        server_version = "TaskRouterReview"
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        timeout = 30

        def _local_host(self) -> bool:
            """The page and its data only for this loopback address: a page of another site whose
            name resolves here (DNS rebinding) sends its own name as Host."""
            port = self.server.server_address[1]
            return self.headers.get("Host") in (f"127.0.0.1:{port}", f"localhost:{port}")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if not self._local_host():
                return self._json(HTTPStatus.FORBIDDEN, {"error": "ask by 127.0.0.1 or localhost"})
            if self.path == "/":
                return self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
            if self.path == "/api/state":
                return self._json(HTTPStatus.OK, store.state())
            return self._json(HTTPStatus.NOT_FOUND, {"error": "no such page"})

        def do_POST(self) -> None:  # noqa: N802
            if not self._local_host() or self.headers.get("X-Review-Token") != token:
                return self._json(HTTPStatus.FORBIDDEN, {"error": "this page's token is missing"})
            length = self.headers.get("Content-Length", "")
            if not length.isascii() or not length.isdigit() or int(length) > MAX_EDIT_BYTES:
                self.close_connection = True
                return self._json(HTTPStatus.BAD_REQUEST, {"error": "a JSON body with a Content-Length"})
            try:
                edit: dict[str, Any] = json.loads(self.rfile.read(int(length)))
                if self.path == "/api/label":
                    return self._json(HTTPStatus.OK, store.set_label(_text(edit, "id"), _whole(edit, "index"), edit["task"]))
                if self.path == "/api/flag":
                    store.set_flag(_text(edit, "id"), _boolean(edit, "flagged"))
                elif self.path == "/api/remove":
                    store.remove(_text(edit, "id"))
                else:
                    return self._json(HTTPStatus.NOT_FOUND, {"error": "no such edit"})
            except (ValueError, KeyError, TypeError) as error:  # ReviewError included
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            except OSError as error:  # the reviewed copy could not be written: the edit is not made
                return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"not saved: {error}"})
            self._json(HTTPStatus.OK, {"saved": True})

        def _json(self, status: HTTPStatus, body: Any) -> None:
            self._send(status, json.dumps(body, ensure_ascii=False).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the page's own requests: nothing to tell the reviewer

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def _text(edit: dict[str, Any], key: str) -> str:
    if not isinstance(edit[key], str):
        raise TypeError(f"{key} must be a string")
    return edit[key]


def _whole(edit: dict[str, Any], key: str) -> int:
    if not isinstance(edit[key], int) or isinstance(edit[key], bool):
        raise TypeError(f"{key} must be an integer")
    return edit[key]


def _boolean(edit: dict[str, Any], key: str) -> bool:
    if not isinstance(edit[key], bool):
        raise TypeError(f"{key} must be true or false")
    return edit[key]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="taskrouter review", description="review a labelled dataset in a browser")
    parser.add_argument("file", help="the dataset to review (JSONL); it is never written")
    parser.add_argument("--tasks", default=str(DEFAULT_TASKS_FILE), help="the task file whose names a label may take")
    parser.add_argument("--reviewed", help="the reviewed copy (default: FILE.reviewed.jsonl beside it)")
    parser.add_argument("--port", type=int, default=0, help="the loopback port (default: any free one)")
    args = parser.parse_args(argv)
    try:
        tasks = [task.name for task in load_task_file(Path(args.tasks), updated_at="")]
        store = ReviewStore(Path(args.file), tasks, Path(args.reviewed) if args.reviewed else None)
    except ValidationError as error:
        print(f"taskrouter review: {args.tasks}: {describe(error)}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:  # DatasetError and ReviewError among them
        print(f"taskrouter review: {error}", file=sys.stderr)
        return 1
    server = make_server(store, args.port)
    print(f"reviewing {args.file}; edits saved to {store.reviewed}", flush=True)
    print(f"open http://127.0.0.1:{server.server_port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
