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
    assert "primary: error; fallback: invalid_output" in caught.value.message


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
