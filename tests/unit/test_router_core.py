"""The routing core with in-memory backends: deadline, fallback policy, task restriction."""

from __future__ import annotations

import threading

import pytest

from taskrouter.core.backends import BackendError, BackendThrottled
from taskrouter.core.errors import NoBackendAvailable
from taskrouter.core.prompting import InvalidOutput
from taskrouter.core.router import Router
from tests.unit.fakes import SETTINGS, Backend, Registry, request

def test_primary_decides():
    decision = Router(Registry(), Backend("sagemaker", "follow_up_email"), Backend("openai", "none"), SETTINGS).route(request())
    assert (decision.task, decision.event, decision.backend, decision.fallback_reason) == (
        "follow_up_email", "start", "sagemaker", None,
    )


def test_primary_past_its_deadline_falls_back_without_waiting_for_it():
    release = threading.Event()
    slow = Backend("sagemaker", "follow_up_email", block_on=release)
    decision = Router(Registry(), slow, Backend("openai", "prepare_linkedin_post"), SETTINGS).route(request())
    assert not release.is_set()  # the primary is still blocked: its answer was not awaited
    release.set()
    assert (decision.backend, decision.fallback_reason, decision.task) == ("openai", "timeout", "prepare_linkedin_post")


@pytest.mark.parametrize(
    ("primary", "reason"),
    [
        (Backend("sagemaker", raises=BackendError("ModelError 424")), "error"),
        (Backend("sagemaker", raises=BackendThrottled("429")), "throttled"),
        (Backend("sagemaker", "I think an e-mail"), "invalid_output"),
        (Backend("sagemaker", raises=InvalidOutput("no text")), "invalid_output"),
        (None, "not_configured"),
    ],
)
def test_fallback_reasons(primary, reason):
    decision = Router(Registry(), primary, Backend("openai", "follow_up_email"), SETTINGS).route(request("follow_up_email"))
    assert (decision.backend, decision.fallback_reason, decision.event) == ("openai", reason, "continue")


def test_both_failing_is_503_with_retry_after():
    router = Router(Registry(), Backend("sagemaker", raises=BackendError("x")), Backend("openai", "bogus"), SETTINGS)
    with pytest.raises(NoBackendAvailable) as caught:
        router.route(request())
    assert caught.value.status == 503 and caught.value.headers == {"Retry-After": "3"}
    assert caught.value.message == (
        "no backend could decide: primary failed: x; fallback answered invalid output: answer is not an allowed choice"
    )


def test_no_fallback_configured_is_503():
    with pytest.raises(NoBackendAvailable):
        Router(Registry(), Backend("sagemaker", raises=BackendError("x")), None, SETTINGS).route(request())


def test_registry_unavailable_is_503():
    with pytest.raises(NoBackendAvailable, match="registry"):
        Router(Registry(fail=True), Backend("sagemaker", "none"), None, SETTINGS).route(request())


def test_tasks_restrict_the_choice_and_unknown_names_are_reported():
    primary = Backend("sagemaker", "follow_up_email")
    decision = Router(Registry(), primary, None, SETTINGS).route(request(tasks=["follow_up_email", "gone_task", "gone_task"]))
    assert decision.ignored_tasks == ("gone_task",)
    assert primary.prompts[0].choices == ("follow_up_email", "none")


def test_a_registry_name_outside_tasks_is_invalid_output():
    decision = Router(
        Registry(), Backend("sagemaker", "prepare_linkedin_post"), Backend("openai", "none"), SETTINGS
    ).route(request(tasks=["follow_up_email"]))
    assert (decision.fallback_reason, decision.task, decision.event) == ("invalid_output", None, "none")


def test_unknown_current_task_is_treated_as_none():
    decision = Router(Registry(), Backend("sagemaker", "follow_up_email"), None, SETTINGS).route(request("retired_task"))
    assert decision.event == "start"



class Broken:
    name = "sagemaker"

    def decide(self, prompt, timeout_s):
        raise KeyError("Body")  # a fault of the adapter itself, not a BackendFailure


def test_an_unforeseen_primary_fault_still_falls_back():
    decision = Router(Registry(), Broken(), Backend("openai", "none"), SETTINGS).route(request())
    assert (decision.backend, decision.fallback_reason, decision.fallback_detail) == ("openai", "error", "KeyError")


def test_current_task_none_is_no_running_task():
    decision = Router(Registry(), Backend("sagemaker", "follow_up_email"), None, SETTINGS).route(request("none"))
    assert decision.event == "start"


# -- a 503 says why (issue 12) -----------------------------------------------------------------------
def _explained_settings(**overrides):
    """The settings' own explanations, as the environment gives them (`adapters.settings`)."""
    from taskrouter.adapters.settings import RuntimeSettings

    environment = {"TASKROUTER_TABLE_NAME": "t", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", **overrides}
    return RuntimeSettings.from_env(environment).router


def _refusal(primary, fallback, settings) -> str:
    with pytest.raises(NoBackendAvailable) as caught:
        Router(Registry(), primary, fallback, settings).route(request())
    assert caught.value.code == "no_backend_available"
    return caught.value.message


@pytest.mark.parametrize(
    ("fallback", "said"),
    [
        (None, "fallback not configured (set OPENAI_API_KEY, or OPENAI_BASE_URL for a local OpenAI-compatible server)"),
        (Backend("openai", raises=BackendError("openai 401")),
         "fallback failed: authentication error (HTTP 401 from http://127.0.0.1:11434/v1; check OPENAI_API_KEY)"),
        (Backend("openai", raises=BackendError("openai 404")),
         "fallback failed: not found (HTTP 404 from http://127.0.0.1:11434/v1; does it serve the model "
         "TASKROUTER_OPENAI_MODEL names (gpt-4.1-mini)?)"),
        (Backend("openai", raises=BackendError("openai 503")),
         "fallback failed: server error (HTTP 503 from http://127.0.0.1:11434/v1)"),
        (Backend("openai", raises=BackendThrottled("openai 429")),
         "fallback failed: rate limited (HTTP 429 from http://127.0.0.1:11434/v1)"),
        (Backend("openai", raises=BackendError("APIConnectionError")),
         "fallback failed: could not connect to http://127.0.0.1:11434/v1"),
        (Backend("openai", "send_invoice"), "fallback answered invalid output: answer is not an allowed choice"),
    ],
    ids=["not_configured", "401", "404", "503", "429", "unreachable", "invalid"],
)
def test_the_503_names_the_cause_and_what_to_set(fallback, said):
    message = _refusal(None, fallback, _explained_settings())
    assert message == f"no backend could decide: primary not configured (TASKROUTER_SAGEMAKER_ENDPOINT unset); {said}"


def test_a_fallback_timeout_names_its_budget_and_variable():
    from taskrouter.core.backends import BackendTimeout

    settings = _explained_settings(TASKROUTER_FALLBACK_TIMEOUT_MS="400")
    message = _refusal(None, Backend("openai", raises=BackendTimeout("openai timeout")), settings)
    assert message.endswith("; fallback timed out after 400 ms (TASKROUTER_FALLBACK_TIMEOUT_MS)")


def test_a_reasoning_strategy_names_its_own_variables():
    from dataclasses import replace

    from taskrouter.core.backends import BackendTimeout
    from taskrouter.core.request import Strategy

    settings = replace(_explained_settings(TASKROUTER_PRIMARY_TIMEOUT_MS_REACT="100"), default_strategy=Strategy.REACT)
    release = threading.Event()
    try:
        message = _refusal(
            Backend("sagemaker", "none", block_on=release), Backend("openai", raises=BackendTimeout("t")), settings
        )
    finally:
        release.set()
    assert message == (
        "no backend could decide: primary timed out after 100 ms (TASKROUTER_PRIMARY_TIMEOUT_MS_REACT); "
        "fallback timed out after 5000 ms (TASKROUTER_FALLBACK_TIMEOUT_MS_REACT)"
    )


def test_a_failing_primary_is_named_with_its_endpoint():
    settings = _explained_settings(TASKROUTER_SAGEMAKER_ENDPOINT="ep", TASKROUTER_SAGEMAKER_COMPONENT="adapter")
    message = _refusal(Backend("sagemaker", raises=BackendError("ModelError 424")), None, settings)
    assert message.startswith("no backend could decide: primary failed: ModelError 424 (SageMaker endpoint ep, component adapter); ")


def test_in_aws_a_missing_fallback_names_the_secret():
    message = _refusal(None, None, _explained_settings(AWS_LAMBDA_FUNCTION_NAME="taskrouter-dev-Router"))
    assert message.endswith("; fallback not configured (TASKROUTER_OPENAI_SECRET_ARN unset)")


def test_without_explanations_the_causes_are_still_said():
    message = _refusal(None, Backend("openai", raises=BackendError("openai 401")), SETTINGS)
    assert message == "no backend could decide: primary not configured; fallback failed: authentication error (HTTP 401)"
