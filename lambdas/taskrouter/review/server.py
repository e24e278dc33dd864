"""`taskrouter review FILE`: a page on loopback to review a labelled dataset, one conversation at a
time: the conversation on one side, its labels on the other; next and back, change a label, flag
for another look, remove. Every edit is saved at once in the reviewed copy (`store.py`).

    taskrouter review FILE.jsonl [--tasks FILE] [--port P] [--reviewed FILE]

Only the page itself may edit: an edit carries a token that only the page knows and must come from
the page's own origin, and no other page may frame the review (a framed page can be clicked through
a lure). docs/review.md tells the whole of it.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskrouter.arguments import OneLineParser
from taskrouter.core.errors import ApiError, InvalidRequest, NotFound, RequestTooLarge
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.validation import describe
from taskrouter.repository import DEFAULT_TASKS_FILE
from taskrouter.review.store import ChangedOnDisk, ReviewError, ReviewStore

MAX_EDIT_BYTES = 64 * 1024
# On every answer: no page of another origin may frame it, sniff it into another type, or learn its URL.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"


def page_policy(nonce: str) -> str:
    """The page runs its own inline script and style (tagged with the nonce of this answer), nothing else."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class EditConflict(ApiError):
    status = 409
    code = "conflict"


class NotSaved(ApiError):
    status = 500
    code = "not_saved"


class ReviewHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed midway: one line, never a traceback; nothing for a client that left."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            print(f"taskrouter review: a request failed: {error!r}", file=sys.stderr)


def make_server(store: ReviewStore, port: int = 0) -> ThreadingHTTPServer:
    token = secrets.token_urlsafe(24)
    page = resources.files("taskrouter.review").joinpath("page.html").read_text(encoding="utf-8")
    page = page.replace("__REVIEW_TOKEN__", token)

    class Handler(BaseHTTPRequestHandler):
        server_version = "TaskRouterReview"
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        timeout = 30

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(self._get)

        def do_POST(self) -> None:  # noqa: N802
            self._answer(self._post)

        def _answer(self, handle: Callable[[], None]) -> None:
            try:
                handle()
            except ApiError as error:
                self._json(HTTPStatus(error.status), error.body())

        def _get(self) -> None:
            self._require_local_host()
            if self.path == "/":
                nonce = secrets.token_urlsafe(16)
                body = page.replace("__CSP_NONCE__", nonce).encode()
                return self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", page_policy(nonce))
            if self.path == "/api/state":
                return self._json(HTTPStatus.OK, _from_store(store.state))
            raise NotFound("no such page")

        def _post(self) -> None:
            self._require_local_host()
            self._require_same_origin()
            if self.headers.get("X-Review-Token") != token:
                raise Forbidden("this page's token is missing")
            edit = self._read_edit()
            if self.path == "/api/label":
                where = _field(edit, "id"), _field(edit, "index", (int,), "an integer")
                task = _field(edit, "task", (str, type(None)), "a task name or null")
                self._json(HTTPStatus.OK, _from_store(store.set_label, *where, task))
            elif self.path == "/api/flag":
                _from_store(store.set_flag, _field(edit, "id"), _field(edit, "flagged", (bool,), "true or false"))
                self._json(HTTPStatus.OK, {"saved": True})
            elif self.path == "/api/remove":
                _from_store(store.remove, _field(edit, "id"))
                self._json(HTTPStatus.OK, {"saved": True})
            else:
                raise NotFound("no such edit")

        def _require_local_host(self) -> None:
            """The page and its data only for this loopback address: a page of another site whose
            name resolves here (DNS rebinding) sends its own name as Host."""
            port = self.server.server_address[1]
            if self.headers.get("Host") not in (f"127.0.0.1:{port}", f"localhost:{port}"):
                raise Forbidden("ask by 127.0.0.1 or localhost")

        def _require_same_origin(self) -> None:
            """Edits from the page's own origin only. A page on another port of this host is the same
            site (Sec-Fetch-Site: same-site) but not the same origin; clients other than browsers
            send neither header, and still need the token."""
            origin, site = self.headers.get("Origin"), self.headers.get("Sec-Fetch-Site")
            if (origin is not None and origin != f"http://{self.headers['Host']}") or site not in (None, "same-origin"):
                raise Forbidden(f"an edit from another origin ({origin or site}) is refused: edit on the review page")

        def _read_edit(self) -> dict[str, Any]:
            length = self.headers.get("Content-Length", "")
            if not length.isascii() or not length.isdigit():
                self.close_connection = True  # the body's end is unknown
                raise InvalidRequest("an edit is a JSON body with a Content-Length")
            if int(length) > MAX_EDIT_BYTES:
                self.close_connection = True
                raise RequestTooLarge(f"an edit is at most {MAX_EDIT_BYTES} bytes")
            try:
                edit = json.loads(self.rfile.read(int(length)))
            except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than the parser goes
                raise InvalidRequest(f"the body is not JSON the server reads: {error}") from None
            if not isinstance(edit, dict):
                raise InvalidRequest("the body must be a JSON object")
            return edit

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own answers (a request line it cannot read, a method with no do_*): the
            same error shape and headers as every other answer."""
            self.close_connection = True
            status = HTTPStatus(code)
            name = "invalid_request" if status == HTTPStatus.BAD_REQUEST else status.phrase.lower().replace(" ", "_")
            self._json(status, {"error": {"code": name, "message": message or status.phrase}})

        def _json(self, status: HTTPStatus, body: Any) -> None:
            self._send(status, json.dumps(body, ensure_ascii=False).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str, policy: str = DATA_POLICY) -> None:
            self.send_response(status)
            headers = {"Content-Type": content_type, "Content-Length": str(len(body)), "Content-Security-Policy": policy}
            for name, value in (headers | SECURITY_HEADERS).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the page's own requests: nothing to tell the reviewer

    return ReviewHTTPServer(("127.0.0.1", port), Handler)


def _from_store(call: Callable[..., Any], *args: Any) -> Any:
    """A store call, its errors as answers: a file changed on disk (409), an edit that does not apply
    (400), a write the disk refused (500: the edit is not made, in memory either)."""
    try:
        return call(*args)
    except ChangedOnDisk as error:
        raise EditConflict(str(error)) from None
    except ReviewError as error:
        raise InvalidRequest(str(error)) from None
    except OSError as error:
        raise NotSaved(f"not saved: {error}") from None


def _field(edit: dict[str, Any], key: str, kinds: tuple[type, ...] = (str,), what: str = "") -> Any:
    if key not in edit:
        raise InvalidRequest(f"{key} is missing")
    if type(edit[key]) not in kinds:  # exactly: true is no index
        raise InvalidRequest(f"{key} must be {what or ' or '.join(kind.__name__ for kind in kinds)}")
    return edit[key]


def port_number(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is no port: give 0 (any free one) to 65535")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="taskrouter review", description="review a labelled dataset in a browser (docs/review.md)")
    parser.add_argument("file", metavar="FILE", help="the dataset to review (JSONL); it is never written")
    parser.add_argument("--tasks", default=str(DEFAULT_TASKS_FILE), help="the task file whose names a label may take")
    parser.add_argument("--reviewed", help="the reviewed copy (default: FILE.reviewed.jsonl beside it)")
    parser.add_argument("--port", type=port_number, default=0, help="the loopback port (default: any free one)")
    return parser


def _path_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a path given, naming its flag and what to give instead; None: nothing."""
    for flag, path, wanted in (
        ("FILE", Path(args.file), "a JSONL dataset, e.g. datasets/example.jsonl"),
        ("--tasks", Path(args.tasks), "a JSON task file, e.g. tasks/default_tasks.json"),
    ):
        if path.is_dir():
            return f"{flag} {path}: a folder; give {wanted}"
        if not path.is_file():
            return f"{flag} {path}: no such file; give {wanted}"
    if args.reviewed and Path(args.reviewed).is_dir():
        return f"--reviewed {args.reviewed}: a folder; give the file to write the reviewed copy to (JSONL)"
    return None


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help (0), or a usage error already printed on one line (2)
        return done.code if isinstance(done.code, int) else 0
    problem = _path_problem(args)
    if problem:
        print(f"taskrouter review: {problem}", file=sys.stderr)
        return 1
    try:
        tasks = [task.name for task in load_task_file(Path(args.tasks), updated_at="")]
    except ValidationError as error:
        print(f"taskrouter review: --tasks {args.tasks}: {describe(error)} (a task file is JSON: "
              '{"tasks": [{"name", "description", "examples"}, ...]}, e.g. tasks/default_tasks.json)', file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"taskrouter review: --tasks {args.tasks}: {error}", file=sys.stderr)
        return 1
    try:
        store = ReviewStore(Path(args.file), tasks, Path(args.reviewed) if args.reviewed else None)
    except (OSError, ValueError) as error:  # DatasetError and ReviewError among them
        print(f"taskrouter review: {error}", file=sys.stderr)
        return 1
    try:
        server = make_server(store, args.port)
    except OSError as error:
        print(
            f"taskrouter review: --port {args.port}: {error.strerror or error}; choose another port, "
            "or leave --port out for any free one",
            file=sys.stderr,
        )
        return 1
    print(f"reviewing {args.file}; edits saved to {store.reviewed}", flush=True)
    for notice in store.state()["notices"]:
        print(f"note: {notice}", flush=True)
    print(f"open http://127.0.0.1:{server.server_port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
