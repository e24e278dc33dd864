"""HTTP test doubles of the router's backends, served on 127.0.0.1 by `ThreadingHTTPServer`.

Each double speaks the wire protocol the real client uses (botocore's `sagemaker-runtime`
rest-json client; the official `openai` client), records what it receives, and answers from a
script: replies queued with `script(...)` are used first, in order, then the `default` reply.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable, Sequence
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer: wait `delay_s`, then send `status`, `headers` and `body`."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    """A request as the double saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes

    def json(self) -> Any:
        return json.loads(self.raw_body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None, delay_s: float = 0.0) -> Reply:
    return Reply(
        status=status,
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        delay_s=delay_s,
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services; every reply has Content-Length
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle/delayed-ACK stall
    wbufsize = -1  # buffer the reply; handle_one_request flushes it in one go
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        received = Received(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            raw_body=raw,
        )
        reply = self.server.double._handle(received)
        if reply.delay_s and self.server.double._wake.wait(reply.delay_s):
            self.close_connection = True  # the double was reset or closed: drop this late request
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (a timeout test)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: HttpDouble

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on a delayed reply is expected, not an error


class HttpDouble:
    """A scriptable HTTP server on 127.0.0.1, on a free port, in a background thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._received: list[Received] = []
        self._wake = threading.Event()
        self.default = self.unscripted()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.double = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=type(self).__name__
        )
        self._thread.start()

    # -- control ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> None:
        """Queue replies, used once each in order before falling back to `default`."""
        with self._lock:
            self._queue.extend(replies)

    def always(self, reply: Reply | Callable[[Received], Reply]) -> None:
        """Answer every request (after any queued replies) with `reply`, or with what `reply(request)`
        gives (a double that answers from what it was asked)."""
        self.default = reply

    def reset(self) -> None:
        """Forget the script and what was received; release any request still sleeping."""
        self._wake.set()
        with self._lock:
            self._queue.clear()
            self._received.clear()
            self.default = self.unscripted()
        self._wake = threading.Event()

    def close(self) -> None:
        self._wake.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    # -- serving ---------------------------------------------------------------------------------
    def _handle(self, received: Received) -> Reply:
        with self._lock:
            self._received.append(received)
            if not self._accepts(received):
                return self.not_found(received)
            reply = self._queue.popleft() if self._queue else self.default
        return reply(received) if callable(reply) else reply

    def _accepts(self, received: Received) -> bool:
        raise NotImplementedError

    def not_found(self, received: Received) -> Reply:
        return _json_reply(404, {"message": f"no route for {received.method} {received.path}"})

    def unscripted(self) -> Reply:
        return _json_reply(500, {"message": f"{type(self).__name__}: no reply was scripted"})


# ---------------------------------------------------------------------------------------------------
class SageMakerRuntimeDouble(HttpDouble):
    """`InvokeEndpoint` as botocore's `sagemaker-runtime` client calls it (rest-json protocol), in
    front of the LMI container the stage deploys (djl-serving `0.36.0-lmi18-dlc`, vLLM 0.12.0) in its
    vLLM async mode, which is what the router talks to.

    Set `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` to `url`. Errors carry `x-amzn-ErrorType`, from which
    botocore's RestJSONParser takes the `ClientError` code, as with the real service.

    What the container accepts, from its source (djl-serving branch 0.36.0-lmi18-dlc at da3e99b9;
    the vllm-0.12.0 wheel, commit 4fd9d6a85):
    - `engines/python/setup/djl_python/lmi_vllm/vllm_async_service.py:134-218` (`preprocess_request`):
      a JSON body (a `text/plain` one is read as TGI `inputs`, `encode_decode.py:63-77`) is routed by
      its first key of `prompt`, `inputs`, `messages`; `messages` goes to vLLM's
      `ChatCompletionRequest`. `model`, when absent, is the served name `lmi` (`:155-156`); for an
      adapter (the `X-Amzn-SageMaker-Adapter-Identifier` header that SageMaker sets for an adapter
      inference component, `input_parser.py:25`, `async_utils.py:120-134`) it becomes the adapter's
      name (`:164-169`). An unknown adapter is a 424 (`:159-163`, `:238-242`), but SageMaker sets that
      header only for a component it hosts: an `InferenceComponentName` the endpoint does not host is
      SageMaker's own 400 `ValidationError` (as an unknown endpoint is), before any container.
    - vLLM's own refusals keep their status in `OriginalStatusCode` (`request_response_utils.py`,
      `vllm_non_stream_output_formatter`): 404 for a model it does not serve, 400 otherwise.
    - vllm `entrypoints/openai/protocol.py:512-994`: the fields of `ChatCompletionRequest`
      (`CHAT_COMPLETION_FIELDS` below); `:866-896` and `sampling_params.py:31-68`: one kind of
      `structured_outputs` constraint at most, among `StructuredOutputsParams`' fields; `:975-983`:
      not both `add_generation_prompt` and `continue_final_message`. The `guided_*` names of older
      vLLM releases are gone.
    - The answer (`lmi_vllm/request_response_utils.py:164-175`, `async_utils.py:23-73`): the bare
      `chat.completion` object of `protocol.py:1440-1506`, then a newline, as application/json.
      Its `choices[0].logprobs` (`protocol.py:1461-1489`, built by `serving_chat.py:1648-1705`) is
      `{"content": [{token, logprob, bytes, top_logprobs}, ...]}`, an entry per generated token, the stop
      token's included, when the request asks (`logprobs: true`, `top_logprobs` not null), else null.
    - Any error of the container reaches the client as SageMaker's `ModelError` (HTTP 424).

    One deliberate difference: vLLM only logs a warning for a field it does not know, and ignores
    it (`OpenAIBaseModel`, `protocol.py:87-116`), so a misspelt or retired field (`guided_choice`)
    silently drops the constraint it carried. This double refuses such a request instead, so that a
    test fails where the real endpoint would quietly answer unconstrained.
    """

    PATH_PREFIX = "/endpoints/"
    PATH_SUFFIX = "/invocations"
    SERVED_MODEL = "lmi"
    CHAT_COMPLETION_FIELDS = frozenset({
        "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
        "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream",
        "stream_options", "temperature", "top_p", "tools", "tool_choice", "reasoning_effort", "include_reasoning",
        "parallel_tool_calls", "user", "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty",
        "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens",
        "spaces_between_special_tokens", "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids",
        "bad_words", "echo", "add_generation_prompt", "continue_final_message", "add_special_tokens", "documents",
        "chat_template", "chat_template_kwargs", "mm_processor_kwargs", "structured_outputs", "priority",
        "request_id", "logits_processors", "return_tokens_as_token_ids", "return_token_ids", "cache_salt",
        "kv_transfer_params", "vllm_xargs",
    })  # fmt: skip
    STRUCTURED_OUTPUT_KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
    STRUCTURED_OUTPUT_FIELDS = frozenset({
        *STRUCTURED_OUTPUT_KINDS, "disable_fallback", "disable_any_whitespace", "disable_additional_properties",
        "whitespace_pattern",
    })  # fmt: skip
    _MODEL_PLACEHOLDER = "@@served-model@@"  # the served name is filled in once the request is seen

    def __init__(self, adapters: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.adapters = set(adapters)  # adapter inference components the endpoint hosts
        self.refusals: list[str] = []

    def reset(self) -> None:
        super().reset()
        self.refusals = []

    def _accepts(self, received: Received) -> bool:
        path = urllib.parse.urlsplit(received.path).path
        return received.method == "POST" and path.startswith(self.PATH_PREFIX) and path.endswith(self.PATH_SUFFIX)

    def _handle(self, received: Received) -> Reply:
        if not self._accepts(received):
            return super()._handle(received)
        component = self.component_of(received)
        problem = self.refusal(received, component)
        if problem is not None:
            with self._lock:
                self._received.append(received)
                self.refusals.append(problem)
            if problem.startswith("Inference Component"):  # SageMaker's, before any container
                return self.error(400, "ValidationError", problem)
            return self.model_error(self._original_status(problem), problem)
        reply = super()._handle(received)
        served = component if component in self.adapters else self.SERVED_MODEL
        body = reply.body.replace(self._MODEL_PLACEHOLDER.encode(), served.encode())
        return replace(reply, body=body if self._asks_logprobs(received) else self._without_logprobs(body))

    def refusal(self, received: Received, component: str | None) -> str | None:
        """Why the container would refuse (or silently mishandle) this request; None if it takes it."""
        if (received.header("Content-Type") or "").split(";")[0].strip() != "application/json":
            return "Input parsing failed: not application/json (text/plain is read as TGI inputs)"
        try:
            body = received.json()
        except ValueError:
            return "Input parsing failed: body is not JSON"
        if not isinstance(body, dict):
            return "Input parsing failed: invalid payload. must contain prompt, inputs, or messages"
        route = next((key for key in ("prompt", "inputs", "messages") if key in body), None)
        if route != "messages":
            return f"Input parsing failed: routed as {route or 'nothing'}, not chat completions"
        if component is not None and component not in self.adapters:
            return f"Inference Component {component} of account 123456789012 not found."
        unknown = sorted(set(body) - self.CHAT_COMPLETION_FIELDS)
        if unknown:
            return f"ignored by vLLM (so refused here): unknown fields {unknown}"
        messages = body["messages"]
        if not (isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )):
            return "Input parsing failed: messages must be a list of {role, content}"
        if "model" in body and body["model"] != self.SERVED_MODEL and component is None:
            return f"The model `{body['model']}` does not exist."
        if body.get("add_generation_prompt") is True and body.get("continue_final_message") is True:
            return "Input parsing failed: add_generation_prompt and continue_final_message are exclusive"
        for name in ("max_completion_tokens", "max_tokens"):
            if name in body and not (isinstance(body[name], int) and body[name] >= 1):
                return f"Input parsing failed: {name} must be a positive integer"
        for name in ("temperature", "repetition_penalty", "top_p"):
            if name in body and not isinstance(body[name], (int, float)):
                return f"Input parsing failed: {name} must be a number"
        constraint = body.get("structured_outputs")
        if constraint is not None:
            return self._structured_outputs_refusal(constraint)
        return None

    @staticmethod
    def _asks_logprobs(received: Received) -> bool:
        """vLLM answers logprobs when `logprobs` is true and `top_logprobs` not null (`serving_chat.py`,
        `chat_completion_full_generator`; `protocol.py:814`)."""
        body = received.json()
        return body.get("logprobs") is True and body.get("top_logprobs", 0) is not None

    @staticmethod
    def _without_logprobs(body: bytes) -> bytes:
        """A scripted answer's body with `logprobs: null` where it carried some (an unasked request)."""
        try:
            completion = json.loads(body)
            choices = completion["choices"]
        except (ValueError, KeyError, TypeError):
            return body  # not a chat completion: sent as scripted
        if not any(isinstance(choice, dict) and choice.get("logprobs") is not None for choice in choices):
            return body
        for choice in choices:
            choice["logprobs"] = None
        return json.dumps(completion).encode() + b"\n"

    @staticmethod
    def _original_status(problem: str) -> int:
        """The container's status: LMI's 424 for what does not parse, vLLM's 404 for a model it does not
        serve, 400 for what vLLM refuses, 500 for what this double refuses and vLLM would ignore."""
        if problem.startswith("Input parsing failed"):
            return 424
        if problem.startswith("The model `"):
            return 404
        return 500 if problem.startswith("ignored by vLLM") else 400

    def _structured_outputs_refusal(self, constraint: Any) -> str | None:
        if not isinstance(constraint, dict):
            return "Input parsing failed: structured_outputs must be an object"
        unknown = sorted(set(constraint) - self.STRUCTURED_OUTPUT_FIELDS)
        if unknown:
            return f"ignored by vLLM (so refused here): unknown structured_outputs fields {unknown}"
        kinds = [kind for kind in self.STRUCTURED_OUTPUT_KINDS if constraint.get(kind) is not None]
        if len(kinds) != 1:
            return f"Input parsing failed: one kind of structured output constraint, got {kinds}"
        (kind,) = kinds
        value = constraint[kind]
        if kind == "choice" and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            return "choice must be a non-empty list of strings"
        if kind == "regex":
            try:
                re.compile(value)  # xgrammar's dialect is close to Python's for the router's patterns
            except (re.error, TypeError):
                return "regex does not compile"
        return None

    # -- what was invoked ------------------------------------------------------------------------
    @staticmethod
    def endpoint_of(received: Received) -> str:
        path = urllib.parse.urlsplit(received.path).path
        return urllib.parse.unquote(path[len(SageMakerRuntimeDouble.PATH_PREFIX) : -len(SageMakerRuntimeDouble.PATH_SUFFIX)])

    @staticmethod
    def component_of(received: Received) -> str | None:
        return received.header("X-Amzn-SageMaker-Inference-Component")

    # -- replies ---------------------------------------------------------------------------------
    @classmethod
    def answer(cls, text: str, *, delay_s: float = 0.0, logprobs: Sequence[tuple[str, float]] | None = None) -> Reply:
        """A successful answer: vLLM's `chat.completion` whose message content is `text`; with `logprobs`,
        the generated tokens' (text, logprob), the stop token last (`<|im_end|>`), answered as vLLM
        answers them to a request that asks (no alternatives: `top_logprobs` 0)."""
        content = None if logprobs is None else [
            {"token": token, "logprob": max(logprob, -9999.0), "bytes": list(token.encode("utf-8", "replace")),
             "top_logprobs": []}
            for token, logprob in logprobs
        ]  # fmt: skip
        generated = 6 if content is None else len(content)  # vLLM counts the stop token, as it lists it
        completion = {
            "id": "chatcmpl-0a1b2c3d4e5f",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": cls._MODEL_PLACEHOLDER,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant", "content": text, "refusal": None, "annotations": None, "audio": None,
                        "function_call": None, "tool_calls": [], "reasoning": None, "reasoning_content": None,
                    },
                    "logprobs": None if content is None else {"content": content},
                    "finish_reason": "stop",
                    "stop_reason": None,
                    "token_ids": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {"prompt_tokens": 812, "total_tokens": 812 + generated, "completion_tokens": generated,
                      "prompt_tokens_details": None},
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "kv_transfer_params": None,
        }  # fmt: skip
        return Reply(
            status=200,
            body=json.dumps(completion).encode() + b"\n",
            headers={"Content-Type": "application/json", "X-Amzn-Invoked-Production-Variant": "AllTraffic"},
            delay_s=delay_s,
        )

    @staticmethod
    def error(status: int, error_type: str, message: str, extra: dict[str, Any] | None = None) -> Reply:
        return _json_reply(
            status,
            {"ErrorCode": error_type, "Message": message, **(extra or {})},
            # the real service appends a namespace, which botocore strips at ':'
            {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.sagemaker/"},
        )

    @classmethod
    def model_error(cls, original_status: int = 500, message: str = "model crashed") -> Reply:
        """The container answered an error: SageMaker's `ModelError` (HTTP 424)."""
        return cls.error(
            424,
            "ModelError",
            f"Received server error ({original_status}) from primary with message \"{message}\".",
            {
                "OriginalStatusCode": original_status,
                "OriginalMessage": message,
                "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/x",
            },
        )

    @classmethod
    def busy(cls) -> Reply:
        """The container's queue is full: djl-serving answers a job its queue cannot take with its
        throttle status, 503 by default, and the body of its ErrorResponse (branch 0.36.0-lmi18-dlc:
        `wlm/src/main/java/ai/djl/serving/wlm/WorkLoadManager.java:113-123`,
        `serving/src/main/java/ai/djl/serving/http/InferenceRequestHandler.java:504-512`,
        `serving/src/main/java/ai/djl/serving/util/ConfigManager.java:496-497`,
        `serving/src/main/java/ai/djl/serving/util/NettyUtils.java:301-311`); SageMaker hands it on as
        a ModelError."""
        body = {"code": 503, "type": "WlmCapacityException", "message": "Worker queue capacity exceeded for model: lmi"}
        return cls.model_error(503, json.dumps(body))

    @classmethod
    def internal_failure(cls) -> Reply:
        return cls.error(500, "InternalFailure", "An internal error occurred.")

    @classmethod
    def throttling(cls) -> Reply:
        """Throttled by SageMaker: HTTP 400 with error type `ThrottlingException`."""
        return cls.error(400, "ThrottlingException", "Rate exceeded")

    @classmethod
    def no_capacity(cls) -> Reply:
        """The inference component has no copy (scaled to zero, or starting): a 400 ValidationError,
        with the message of AWS's scale-to-zero examples."""
        return cls.error(
            400,
            "ValidationError",
            "Inference Component has no capacity to process this request. ApplicationAutoScaling may be "
            "in-progress (if configured) or try to increase the capacity by invoking "
            "UpdateInferenceComponentRuntimeConfig API.",
        )

    @staticmethod
    def too_many_requests() -> Reply:
        """A bare HTTP 429 with no error type (botocore's code is then "429")."""
        return _json_reply(429, {"message": "Too Many Requests"})


# ---------------------------------------------------------------------------------------------------
class OpenAIDouble(HttpDouble):
    """`POST /v1/chat/completions` as the official `openai` client calls it.

    Set `OPENAI_BASE_URL` to `base_url` (which ends in `/v1`).

    `dialect` is the structured output the server takes: `OPENAI` (the default) takes any request;
    `LLAMA_CPP_PYTHON` refuses, as llama-cpp-python's server (`python -m llama_cpp.server`, 0.3.36)
    does, a `response_format` other than `text` or `json_object` (with an optional `schema`):
    - llama_cpp/llama_types.py:176-180, `ChatCompletionRequestResponseFormat`: `type` is
      `Literal["text", "json_object"]`, `schema` optional; llama_cpp/server/types.py:236 types the
      request's `response_format` with it, so FastAPI's validation of the body fails on json_schema;
    - llama_cpp/server/errors.py:170-210, `RouteErrorHandler.custom_route_handler`: every exception
      but an HTTPException, that validation error included, is caught; the body, invalid, is not
      re-parsed (`body = None`), and `error_message_wrapper` (`:150-160`) answers HTTP 500, an
      OpenAI-style error of type `internal_server_error` whose message is `str(error)`: FastAPI's
      `ValidationException.__str__` (fastapi/exceptions.py:204-209, fastapi 0.165.0): the count, each
      pydantic error on its own line, then the endpoint (llama_cpp/server/app.py:376, the route's
      decorator). Checked against the real server (0.3.36, SmolLM2-135M): the same status and body.
    The refused requests are recorded, and listed in `refusals`; the others get the script's replies.
    """

    PATH = "/v1/chat/completions"
    OPENAI = "openai"
    LLAMA_CPP_PYTHON = "llama-cpp-python"
    LLAMA_CPP_PYTHON_FORMATS = ("text", "json_object")

    def __init__(self, dialect: str = OPENAI) -> None:
        super().__init__()
        self._initial_dialect = dialect
        self.dialect = dialect
        self.refusals: list[Received] = []

    def reset(self) -> None:
        super().reset()
        self.dialect = self._initial_dialect
        self.refusals = []

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _handle(self, received: Received) -> Reply:
        if self.dialect == self.LLAMA_CPP_PYTHON and self._accepts(received):
            refusal = self.llama_cpp_python_refusal(received)
            if refusal is not None:
                with self._lock:
                    self._received.append(received)
                    self.refusals.append(received)
                return refusal
        return super()._handle(received)

    @classmethod
    def llama_cpp_python_refusal(cls, received: Received) -> Reply | None:
        """llama-cpp-python's answer to a `response_format` it does not take; None if it takes it."""
        try:
            response_format = received.json().get("response_format")
        except (ValueError, AttributeError):
            return None
        if response_format is None:
            return None
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind in cls.LLAMA_CPP_PYTHON_FORMATS:
            return None
        error = {
            "type": "literal_error", "loc": ("body", "response_format", "type"),
            "msg": "Input should be 'text' or 'json_object'", "input": kind,
            "ctx": {"expected": "'text' or 'json_object'"},
        }  # fmt: skip
        message = (  # byte for byte the real server's, but for where it is installed
            f"1 validation error:\n  {error}\n\n"
            '  File "/opt/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, in create_chat_completion\n'
            "    POST /v1/chat/completions"
        )
        return _json_reply(500, {"error": {"message": message, "type": "internal_server_error", "param": None, "code": None}})

    def _accepts(self, received: Received) -> bool:
        return received.method == "POST" and urllib.parse.urlsplit(received.path).path == self.PATH

    def not_found(self, received: Received) -> Reply:
        return self.error(404, "invalid_request_error", f"Unknown request URL: {received.method} {received.path}")

    @staticmethod
    def completion(content: str, *, model: str = "gpt-4.1-mini", delay_s: float = 0.0) -> Reply:
        """A valid `chat.completion` object whose message content is `content`."""
        return _json_reply(
            200,
            {
                "id": "chatcmpl-test0001",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 321, "completion_tokens": 7, "total_tokens": 328},
                "system_fingerprint": "fp_test",
            },
            {"x-request-id": "req_test0001"},
            delay_s=delay_s,
        )

    @classmethod
    def answer(cls, task: str | None, *, delay_s: float = 0.0) -> Reply:
        """The structured answer `{"task": task}` (None: "none")."""
        return cls.completion(json.dumps({"task": "none" if task is None else task}), delay_s=delay_s)

    @staticmethod
    def error(status: int, error_type: str, message: str, code: str | None = None) -> Reply:
        return _json_reply(status, {"error": {"message": message, "type": error_type, "param": None, "code": code}})

    @classmethod
    def server_error(cls) -> Reply:
        return cls.error(500, "server_error", "The server had an error while processing your request.")

    @classmethod
    def rate_limited(cls) -> Reply:
        return cls.error(429, "requests", "Rate limit reached for requests", "rate_limit_exceeded")
