"""The wire, as botocore's `sagemaker-runtime` client and the stage's endpoint speak it.

SageMaker's side (botocore's service model, data/sagemaker-runtime/2017-05-13/service-2.json):
`InvokeEndpoint` is `POST /endpoints/{EndpointName}/invocations` (rest-json); the body is the model's
input as is, `InferenceComponentName` the header `X-Amzn-SageMaker-Inference-Component`; the answer's
`Content-Type` and `x-Amzn-Invoked-Production-Variant` headers. An error is the status of its shape
(ValidationError 400, ModelError 424, InternalFailure 500, ...) with its name in `x-amzn-ErrorType`
(botocore's RestJSONParser reads the code there, up to a ':'), the message in `Message`. SageMaker
refuses a name it does not know before any container sees the request, with a ValidationError
("Endpoint ... of account ... not found."); an inference component it does not know is refused the
same way. Whatever the container answers with an error status reaches the client as a `ModelError`
(424) carrying `OriginalStatusCode` and `OriginalMessage`.

The container's side (LMI 0.36 in vLLM async mode, `djl_python/lmi_vllm/vllm_async_service.py`): a JSON
body whose first key of `prompt`, `inputs`, `messages` is `messages` is a chat completion; a request
that does not parse is the container's 424 "Input parsing failed: ..."; vLLM's own refusals keep their
status (400, or 404 for a model it does not serve); the answer is vLLM's `chat.completion` object and a
newline, as application/json. `model` defaults to LMI's served name `lmi`, or to the adapter's name.

The fields it takes are read as vLLM reads them: `ChatCompletionRequest` is a pydantic model in lax
mode (vllm/entrypoints/openai/protocol.py, `temperature: float | None`, `n: int | None`, `stream: bool |
None`, ...), so `temperature: false` is 0.0, `n: true` is 1, `stream: 0` is false and `"0.5"` is 0.5;
what pydantic refuses (`stream: 2`, `n: 1.5`) is LMI's 424 "Input parsing failed"
(`vllm_async_service.py:238-242`). `_Fields` below holds the same types, so pydantic coerces exactly so.

This server decodes greedily and nothing else, so a request that asks for more (sampling, several
answers, streaming, tools) is refused, naming the field, rather than answered otherwise than
asked. vLLM would ignore a field it does not know (and with it, say, a misspelt constraint); this
server refuses it, as the test double of the endpoint does.

The answers of the container's limits (limits.py), as the stage's gives them:
- a request beyond the queue: djl-serving's answer to a job its queue cannot take (branch
  0.36.0-lmi18-dlc: `wlm/.../WorkLoadManager.java:113-123` fails it with WlmCapacityException;
  `serving/.../http/InferenceRequestHandler.java:504-512` answers that with the throttle status,
  `ConfigManager.java:496-497` `throttle_error_http_code`, 503 by default; `NettyUtils.java:301-311`
  writes the body `{"code", "type", "message"}`), which SageMaker hands on as a 424 ModelError with
  OriginalStatusCode 503 (`busy`);
- a request past its deadline: LMI sets none in vLLM async mode (`PyProcess.java:168-169` hands the
  request to AsyncRequestManager with no timeout; predict_timeout bounds only the other modes); the
  front end waits `chunked_read_timeout` (120 s, `ConfigManager.java:470`) and then drops the
  connection (`InferenceRequestHandler.java:418,453-457`), so what answers first is SageMaker's own
  limit on an invocation (60 s): a 424 ModelError "Received server error (0) from primary with
  message "Your invocation timed out while waiting for a response from container primary. ..."",
  as AWS's users have quoted it (aws/amazon-sagemaker-examples#799, #1407) (`invocation_timed_out`).

Logprobs, as vLLM 0.12 takes and answers them (logprobs.py: how each is computed):
- `logprobs` (bool) and `top_logprobs` (int), vllm/entrypoints/openai/protocol.py:519-520, checked as
  sent by `check_logprobs` (:844-863): `top_logprobs` below 0 but -1, or above 0 (or -1) without a true
  `logprobs`, is a validation error, LMI's 424 "Input parsing failed"; the engine is asked for
  `top_logprobs if logprobs else None` of them (:814).
- Over the server's `max_logprobs` (20, vllm/config/model.py:211; -1 counts as the whole vocabulary),
  vLLM's engine raises ValueError (vllm/v1/engine/input_processor.py:71-99), which serving_chat.py:354-356
  answers as an ErrorResponse(error=ErrorInfo(...)) of code 400; LMI's formatter finds no `message` or
  `code` at its top level and answers 500 with `str()` of it (djl-serving lmi_vllm/
  request_response_utils.py, `vllm_non_stream_output_formatter`; async_utils.py `_create_output`).
- The answer's `choices[0].logprobs` is ChatCompletionLogProbs (protocol.py:1461-1489): `content`, an
  entry per generated token, the stop token's included, each `{token, logprob, bytes, top_logprobs}`
  built as serving_chat.py:1648-1705 builds it: `token` is `tokenizer.decode([id])`
  (vllm/tokenizers/detokenizer_utils.py:83-104), `logprob` at least -9999.0 (-inf shown so), `bytes` the
  UTF-8 of that text with errors replaced; `null` when not asked (or `top_logprobs` null).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydantic

INVOCATIONS = re.compile(r"^/endpoints/(?P<endpoint>[^/]+)/invocations$")
COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"
VARIANT_HEADER = "x-Amzn-Invoked-Production-Variant"
ERROR_TYPE_HEADER = "x-amzn-ErrorType"
ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.sagemaker/"  # botocore strips it at ':'
VARIANT = "AllTraffic"
# botocore's InferenceComponentHeader: an adapter is invoked by that header, so its name follows its rule.
COMPONENT_NAME = re.compile(r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$")
MAX_COMPONENT_NAME = 63
SERVED_MODEL = "lmi"  # LMI's served model name when the stage sets none
LOCAL_ACCOUNT = "000000000000"
JSON = "application/json"

# Fields taken, and the value of each that asks for nothing beyond greedy decoding of one answer.
NEUTRAL = {"temperature": 0, "repetition_penalty": 1, "top_p": 1, "n": 1, "stream": False, "add_generation_prompt": True}
TAKEN = frozenset({"messages", "model", "max_completion_tokens", "max_tokens", "structured_outputs", "seed",
                   "return_token_ids", "logprobs", "top_logprobs", *NEUTRAL})
_LONG = 2**63  # vLLM bounds `seed` to torch.long
MAX_LOGPROBS = 20  # vLLM's default `max_logprobs`; the stage's endpoint sets none
LOGPROB_FLOOR = -9999.0  # how vLLM shows -inf (a token the grammar forbids)


class _Fields(pydantic.BaseModel):
    """The taken fields but `messages` and `structured_outputs` (checked on their own), typed as vLLM
    0.12's ChatCompletionRequest types them: pydantic's lax mode coerces them as it does there."""

    model_config = pydantic.ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    n: int | None = 1
    stream: bool | None = False
    add_generation_prompt: bool = True
    seed: int | None = pydantic.Field(None, ge=-_LONG, le=_LONG - 1)
    return_token_ids: bool | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0

    @pydantic.model_validator(mode="before")
    @classmethod
    def _check_logprobs(cls, data: Any) -> Any:
        """vLLM's `check_logprobs`, on the values as sent (before pydantic reads them): a `top_logprobs`
        that does not compare with a number raises TypeError there, also LMI's 424."""
        if (top_logprobs := data.get("top_logprobs")) is not None:
            if top_logprobs < 0 and top_logprobs != -1:
                raise ValueError("`top_logprobs` must be a positive value or -1.")
            if (top_logprobs == -1 or top_logprobs > 0) and not data.get("logprobs"):
                raise ValueError("when using `top_logprobs`, `logprobs` must be set to true.")
        return data


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Refusal(Exception):
    """The request is refused with `reply`."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.body.decode(errors="replace"))
        self.reply = reply


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    adapter: str | None  # the inference component, when one was named
    model: str  # the name the answer carries
    max_tokens: int | None
    structured_outputs: Mapping[str, Any] | None
    return_token_ids: bool
    logprobs: int | None = None  # None: none asked; else each token's and this many likeliest tokens'


def parse_adapters(text: str, source: str = "--adapters") -> dict[str, Path]:
    """`name=DIR,...` as adapter folders by inference component name; an empty text is none."""
    adapters: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, folder = (part.strip() for part in item.partition("="))
        if not equals or not folder:
            raise ValueError(f"{source}: {item!r} is not name=DIR")
        if not COMPONENT_NAME.fullmatch(name) or len(name) > MAX_COMPONENT_NAME:
            raise ValueError(f"{source}: {name!r} is not an inference component name (letters, digits and inner "
                             f"hyphens, at most {MAX_COMPONENT_NAME})")
        if name in adapters:
            raise ValueError(f"{source}: {name!r} is named twice")
        adapters[name] = Path(folder).expanduser()
    return adapters


# -- SageMaker's errors ------------------------------------------------------------------------------
def sagemaker_error(status: int, code: str, message: str, **extra: Any) -> Reply:
    body = json.dumps({"ErrorCode": code, "Message": message, **extra}).encode()
    return Reply(status, body, {"Content-Type": JSON, ERROR_TYPE_HEADER: code + ERROR_NAMESPACE})


def validation_error(message: str) -> Reply:
    return sagemaker_error(400, "ValidationError", message)


def model_error(original_status: int, message: str, endpoint: str) -> Reply:
    """The container's error, as SageMaker hands it on."""
    kind = "client" if 400 <= original_status < 500 else "server"
    return sagemaker_error(
        424,
        "ModelError",
        f'Received {kind} error ({original_status}) from primary with message "{message}". '
        f"See the model server's output for more information.",
        OriginalStatusCode=original_status,
        OriginalMessage=message,
        LogStreamArn=f"arn:aws:logs:local:{LOCAL_ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{endpoint}",
    )


def busy(endpoint: str) -> Reply:
    """The container's answer to a request beyond its queue (the module's docstring)."""
    body = {"code": 503, "type": "WlmCapacityException",
            "message": f"Worker queue capacity exceeded for model: {SERVED_MODEL}"}
    return model_error(503, json.dumps(body), endpoint)


def invocation_timed_out(endpoint: str) -> Reply:
    """SageMaker's answer to an invocation whose container answered nothing in time (the module's
    docstring): no status from the container, hence 0."""
    return model_error(0, "Your invocation timed out while waiting for a response from container primary. Review the "
                          "latency metrics for each container in Amazon CloudWatch, resolve the issue, and try again.",
                       endpoint)


def unknown_endpoint(endpoint: str) -> Reply:
    return validation_error(f"Endpoint {endpoint} of account {LOCAL_ACCOUNT} not found.")


def unknown_component(component: str) -> Reply:
    return validation_error(f"Inference Component {component} of account {LOCAL_ACCOUNT} not found.")


# -- the container's request -------------------------------------------------------------------------
def chat_request(body: bytes, content_type: str | None, component: str | None, endpoint: str) -> ChatRequest:
    """The chat completion LMI would hand vLLM, or a Refusal with the error it would answer."""

    def parsing_failed(why: str) -> Refusal:
        return Refusal(model_error(424, f"Input parsing failed: {why}", endpoint))

    def refused(why: str, status: int = 400) -> Refusal:
        return Refusal(model_error(status, why, endpoint))

    if (content_type or "").split(";")[0].strip().lower() != JSON:
        raise parsing_failed(f"Content-Type {content_type!r} is not {JSON} (LMI reads text/plain as TGI inputs)")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise parsing_failed("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise parsing_failed("invalid payload. must contain prompt, inputs, or messages")
    route = next((key for key in ("prompt", "inputs", "messages") if key in payload), None)
    if route != "messages":
        raise parsing_failed(f"a {route or 'payload without prompt, inputs or messages'} request: this server "
                             "takes chat completions (messages) only")
    messages = payload["messages"]
    if not (isinstance(messages, list) and messages and all(
        isinstance(m, dict) and set(m) <= {"role", "content", "name"} and m.get("role") in ("system", "user", "assistant")
        and isinstance(m.get("content"), str) for m in messages
    )):  # fmt: skip
        raise parsing_failed("messages must be a non-empty list of {role: system|user|assistant, content: string}")
    others = sorted(set(payload) - TAKEN)
    if others:
        raise refused(f"fields {others} are not taken by the local model server (greedy decoding of one answer)")
    try:
        fields = _Fields.model_validate(payload)
    except pydantic.ValidationError as error:
        raise parsing_failed(_first_problem(error)) from None
    except TypeError as error:  # vLLM's check_logprobs comparing what is not a number
        raise parsing_failed(str(error)) from None
    for name, neutral in NEUTRAL.items():
        given, read = payload.get(name), getattr(fields, name)
        if name in payload and read != neutral:
            shown = repr(given) if type(given) is type(read) else f"{given!r} (read as {read!r})"
            raise refused(f"{name} {shown}: the local model server decodes greedily only ({name} {neutral!r})")
    tokens = [value for value in (fields.max_completion_tokens, fields.max_tokens) if value is not None]
    if any(value < 1 for value in tokens):
        raise parsing_failed("max_completion_tokens and max_tokens must be positive integers")
    model = SERVED_MODEL if component is None else component  # LMI's: the adapter's name when one is named
    if component is None and fields.model not in (None, SERVED_MODEL):
        raise refused(f"The model `{fields.model}` does not exist.", 404)
    return ChatRequest(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        adapter=component,
        model=model,
        max_tokens=tokens[0] if tokens else None,  # max_completion_tokens first, as vLLM reads them
        structured_outputs=payload.get("structured_outputs"),
        return_token_ids=bool(fields.return_token_ids),
        logprobs=fields.top_logprobs if fields.logprobs else None,
    )


def logprobs_over_limit(request: ChatRequest, vocab_size: int, endpoint: str) -> Refusal | None:
    """vLLM's refusal of more logprobs a token than the server's `max_logprobs` (the module's docstring),
    as LMI answers it; None when within it."""
    asked = vocab_size if request.logprobs == -1 else request.logprobs
    if not asked or asked <= MAX_LOGPROBS:
        return None
    message = f"Requested sample logprobs of {asked}, which is greater than max allowed: {MAX_LOGPROBS}"
    return Refusal(model_error(500, f"error=ErrorInfo(message={message!r}, type='BadRequestError', param=None, "
                                    "code=400)", endpoint))


def _first_problem(error: pydantic.ValidationError) -> str:
    """pydantic's first complaint on one line: the field and why."""
    problem = error.errors(include_url=False)[0]
    if not problem["loc"]:  # a check of the whole request (check_logprobs): its message says it all
        return problem["msg"]
    field = ".".join(str(part) for part in problem["loc"])
    given = repr(problem.get("input"))
    return f"{field}: {problem['msg']} (got {given[:60] + '...' if len(given) > 60 else given})"


# -- vLLM's answer -----------------------------------------------------------------------------------
def chat_completion(
    request: ChatRequest, text: str, finish_reason: str, prompt_ids: tuple[int, ...], token_ids: tuple[int, ...],
    logprobs: dict[str, Any] | None = None,
) -> Reply:
    """vLLM's `chat.completion` object and a newline, as LMI answers it; `logprobs` from `chat_logprobs`."""
    completion = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": None, "audio": None,
                        "function_call": None, "tool_calls": [], "reasoning": None, "reasoning_content": None},
            "logprobs": logprobs,
            "finish_reason": finish_reason,
            "stop_reason": None,
            "token_ids": list(token_ids) if request.return_token_ids else None,
        }],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {"prompt_tokens": len(prompt_ids), "total_tokens": len(prompt_ids) + len(token_ids),
                  "completion_tokens": len(token_ids), "prompt_tokens_details": None},
        "prompt_logprobs": None,
        "prompt_token_ids": list(prompt_ids) if request.return_token_ids else None,
        "kv_transfer_params": None,
    }  # fmt: skip
    body = json.dumps(completion, ensure_ascii=False).encode() + b"\n"
    return Reply(200, body, {"Content-Type": JSON, VARIANT_HEADER: VARIANT})


class Scored(Protocol):
    """A generated token's logprobs (logprobs.TokenLogprobs)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def chat_logprobs(scores: Iterable[Scored], decode: Callable[[int], str]) -> dict[str, Any]:
    """vLLM's ChatCompletionLogProbs of the generated tokens (the module's docstring); `decode` gives a
    token's text alone (`tokenizer.decode([id])`)."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        text = decode(token)
        return {"token": text, "logprob": max(logprob, LOGPROB_FLOOR), "bytes": list(text.encode("utf-8", "replace"))}

    return {"content": [{**entry(score.token, score.logprob), "top_logprobs": [entry(*pair) for pair in score.top]}
                        for score in scores]}
