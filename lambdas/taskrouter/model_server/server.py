"""The model server's HTTP side on 127.0.0.1: `POST /endpoints/{name}/invocations` as SageMaker's runtime
answers it (protocol.py), `GET /ping` once the model is loaded, and with debugging on (`--debug`,
TASKROUTER_MODEL_DEBUG=1) `GET /debug/invocations`: the recent invocations, each with the token ids the
model was fed, so that a test can hold them to the trainer's.

Each invocation is watched (limits.py): its deadline runs from its arrival, and its client is looked at
between tokens: a socket that reads as closed (EOF, without consuming anything) means nobody waits
for the answer any more. Such a request stops and is answered nothing."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskrouter.model_server import protocol
from taskrouter.model_server.constraints import ConstraintError, Grammars
from taskrouter.model_server.engine import ContextTooLong, DeadEnd, Engine, PromptError
from taskrouter.model_server.limits import ClientGone, DeadlinePassed, QueueFull, Watch
from taskrouter.model_server.protocol import Refusal, Reply

DEBUG_PATH = "/debug/invocations"
DEBUG_KEPT = 64  # invocations the debug endpoint shows, the latest last
MAX_BODY_BYTES = 25 * 1024 * 1024  # InvokeEndpoint's payload limit
_BYTE_COUNT = re.compile(r"[0-9]{1,20}")


def say(message: str) -> None:
    print(f"[taskrouter-model] {message}", file=sys.stderr, flush=True)


@dataclass
class ModelService:
    """What answers an invocation: the engine, its grammars, the endpoint's name and the debug record."""

    engine: Engine
    grammars: Grammars
    endpoint: str
    debug: bool = False

    def __post_init__(self) -> None:
        self._invocations: deque[dict[str, Any]] = deque(maxlen=DEBUG_KEPT)
        self._record_lock = threading.Lock()

    def invoke(
        self, endpoint: str, headers: dict[str, str], body: bytes, client_gone: Callable[[], bool] = lambda: False
    ) -> Reply | None:
        """The answer to one invocation; None when its client left before it (nothing to answer)."""
        watch = Watch.within(self.engine.limits.deadline_s, client_gone)
        if endpoint != self.endpoint:
            return protocol.unknown_endpoint(endpoint)
        component = headers.get(protocol.COMPONENT_HEADER.lower()) or None
        if component is not None and component not in self.engine.loaded.adapters:
            return protocol.unknown_component(component)
        try:
            request = protocol.chat_request(body, headers.get("content-type"), component, endpoint)
            over_limit = protocol.logprobs_over_limit(request, self.engine.loaded.vocab_size, endpoint)
            if over_limit is not None:  # vLLM's engine checks it before the constraint (input_processor.py)
                raise over_limit
            try:
                grammar = self.grammars.compile(request.structured_outputs)
            except ConstraintError as error:
                raise Refusal(protocol.model_error(400, str(error), endpoint)) from None
            completion = self.engine.complete(request.messages, adapter=request.adapter, grammar=grammar,
                                              max_tokens=request.max_tokens, logprobs=request.logprobs, watch=watch)
        except Refusal as refusal:
            return refusal.reply
        except (ContextTooLong, PromptError) as error:  # vLLM's 400s
            return protocol.model_error(400, str(error), endpoint)
        except QueueFull as error:
            say(f"refused at once: {error}")
            return protocol.busy(endpoint)
        except DeadlinePassed as stopped:
            say(f"stopped {stopped.reason} ({self.engine.limits.deadline_s:g} s) after {stopped.tokens} tokens")
            return protocol.invocation_timed_out(endpoint)
        except ClientGone as stopped:
            say(f"stopped, {stopped.reason}, after {stopped.tokens} tokens")
            return None
        except DeadEnd as error:  # vLLM aborts such a request: the container's 500 (constraints.py)
            say(f"invocation failed: {error}")
            return protocol.model_error(500, str(error), endpoint)
        except Exception as error:  # a bug or a model failure: the container's 500, told here too
            say(f"invocation failed: {type(error).__name__}: {error}")
            return protocol.model_error(500, f"{type(error).__name__}: {error}", endpoint)
        say(f"{request.model}: {len(completion.prompt_ids)} prompt tokens ({completion.cached_tokens} cached), "
            f"{len(completion.token_ids)} generated ({completion.finish_reason}) in {completion.seconds * 1000:.0f} ms")
        if self.debug:
            with self._record_lock:
                self._invocations.append({
                    "component": component, "model": request.model, "messages": request.messages,
                    "prompt_token_ids": list(completion.prompt_ids), "cached_tokens": completion.cached_tokens,
                    "token_ids": list(completion.token_ids), "text": completion.text,
                    "finish_reason": completion.finish_reason, "seconds": round(completion.seconds, 4),
                })  # fmt: skip
        logprobs = None
        if completion.logprobs is not None:
            tokenizer = self.engine.loaded.tokenizer
            logprobs = protocol.chat_logprobs(completion.logprobs, lambda token: tokenizer.decode([token]))
        return protocol.chat_completion(request, completion.text, completion.finish_reason,
                                        completion.prompt_ids, completion.token_ids, logprobs)

    def invocations(self) -> list[dict[str, Any]]:
        with self._record_lock:
            return list(self._invocations)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pooled connections expect
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stall per request
    wbufsize = -1  # the reply is buffered and flushed in one go
    server: ModelHttpServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        lengths = self.headers.get_all("Content-Length") or ["0"]
        if len(set(lengths)) != 1 or not _BYTE_COUNT.fullmatch(lengths[0].strip()):
            # Where the body ends is unknown: answered, and the connection closed, never read on.
            self.close_connection = True
            self._send(protocol.validation_error(f"Content-Length {', '.join(lengths)!r} is not a byte count"))
            return
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(protocol.validation_error(f"the body is over {MAX_BODY_BYTES} bytes"))
            return
        body = self.rfile.read(length) if length else b""
        match = protocol.INVOCATIONS.fullmatch(urllib.parse.urlsplit(self.path).path)
        if match is None:
            self._send(_not_found(self.command, self.path))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        endpoint = urllib.parse.unquote(match["endpoint"])
        reply = self.server.service.invoke(endpoint, headers, body, lambda: _closed_by_peer(self.connection))
        if reply is None:  # the client left: nobody to answer
            self.close_connection = True
            return
        self._send(reply)

    def do_GET(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        if path == "/ping":
            self._send(Reply(200, b"{}\n", {"Content-Type": protocol.JSON}))
        elif path == DEBUG_PATH and self.server.service.debug:
            body = json.dumps({"invocations": self.server.service.invocations()}).encode()
            self._send(Reply(200, body, {"Content-Type": protocol.JSON}))
        else:
            self._send(_not_found(self.command, self.path))

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the router gave up waiting (its timeout)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # each invocation is told by ModelService, once


def _closed_by_peer(connection: socket.socket) -> bool:
    """Whether the client has closed its side: a peek that does not wait reads nothing (EOF). Bytes
    waiting (a next request on the same connection) are left where they are; none: still there."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:  # nothing to read, and no end: the client is waiting
        return False
    except OSError:  # reset, or already closed
        return True


def _not_found(method: str, path: str) -> Reply:
    return Reply(404, json.dumps({"message": f"no route for {method} {path}"}).encode(), {"Content-Type": protocol.JSON})


class ModelHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    service: ModelService

    def __init__(self, port: int) -> None:
        """Bound and listening at once (a port in use is said before the model loads); requests wait
        in the backlog until `serve` starts."""
        super().__init__(("127.0.0.1", port), _Handler)

    def serve(self, service: ModelService) -> None:
        self.service = service
        self.serve_forever(poll_interval=0.2)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up is not the server's error
