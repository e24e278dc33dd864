"""A primary's answer under its strategy's confidence threshold is escalated to the fallback
(`low_confidence`); the policy when no fallback can decide; the breaker and the threshold's registry."""

from __future__ import annotations

import dataclasses
import math

import pytest

from taskrouter.adapters.settings import SettingsError, thresholds_from_env
from taskrouter.core.backends import BackendError
from taskrouter.core.confidence import NoConfidence, TokenLogprob, answer_confidence, logprobs_of
from taskrouter.core.prompting import build_prompt
from taskrouter.core.request import Message, RouteRequest, Strategy
from taskrouter.core.resilience import CircuitBreaker
from taskrouter.core.router import Router, Threshold, primary_failed
from taskrouter.core.tasks import Task, tasks_sha256
from tests.unit.fakes import SETTINGS, TASKS, Backend, Registry, request

DIGEST = tasks_sha256(TASKS.values())


def settings(value=0.6, digest=DIGEST, strategy=Strategy.ZERO_SHOT):
    return dataclasses.replace(SETTINGS, thresholds={strategy: Threshold(value, digest)})


def route(primary, fallback, value=0.6, digest=DIGEST, req=None, breakers=None):
    return Router(Registry(), primary, fallback, settings(value, digest), breakers=breakers).route(req or request())


def test_an_answer_at_or_above_the_threshold_is_kept_with_its_confidence():
    for confidence in (0.6, 0.91):
        decision = route(Backend("sagemaker", "follow_up_email", confidence=confidence), Backend("openai", "none"))
        assert (decision.backend, decision.fallback_reason, decision.task) == ("sagemaker", None, "follow_up_email")
        assert (decision.primary.answer, decision.primary.confidence, decision.threshold) == (
            "follow_up_email", confidence, 0.6)


def test_an_answer_under_the_threshold_is_the_fallbacks_decision_the_primarys_kept_beside_it():
    fallback = Backend("openai", "prepare_linkedin_post")
    decision = route(Backend("sagemaker", "follow_up_email", confidence=0.42), fallback)
    assert (decision.backend, decision.fallback_reason, decision.task, decision.event) == (
        "openai", "low_confidence", "prepare_linkedin_post", "start")
    assert (decision.primary.answer, decision.primary.confidence) == ("follow_up_email", 0.42)
    assert decision.fallback_detail == "confidence 0.4200 under the threshold 0.6"
    assert len(fallback.prompts) == 1  # the same prompt the primary had


@pytest.mark.parametrize("fallback", [None, Backend("openai", raises=BackendError("openai 500"))], ids=["none", "failing"])
def test_with_no_fallback_to_decide_the_primarys_answer_stands_marked_low_confidence(fallback):
    decision = route(Backend("sagemaker", "follow_up_email", confidence=0.3), fallback)
    assert (decision.backend, decision.fallback_reason, decision.task, decision.event) == (
        "sagemaker", "low_confidence", "follow_up_email", "start")
    assert decision.primary.confidence == 0.3
    assert decision.fallback_detail.endswith(": kept")


def test_a_failing_fallback_is_retried_once_before_the_primarys_answer_stands():
    fallback = Backend("openai", raises=BackendError("openai 503"))
    route(Backend("sagemaker", "none", confidence=0.1), fallback)
    assert len(fallback.prompts) == 2


def test_an_answer_with_no_confidence_is_kept():
    decision = route(Backend("sagemaker", "follow_up_email", confidence=None), Backend("openai", "none"))
    assert (decision.backend, decision.fallback_reason, decision.threshold) == ("sagemaker", None, None)


def test_a_threshold_holds_only_its_own_strategy():
    router = Router(Registry(), Backend("sagemaker", "none", confidence=0.01), Backend("openai", "none"),
                    settings(strategy=Strategy.REACT))
    decision = router.route(request())  # zero-shot: no threshold
    assert (decision.backend, decision.fallback_reason, decision.threshold) == ("sagemaker", None, None)


def test_no_threshold_escalates_nothing():
    decision = Router(Registry(), Backend("sagemaker", "none", confidence=0.001), Backend("openai", "none"),
                      SETTINGS).route(request())
    assert (decision.backend, decision.fallback_reason) == ("sagemaker", None)


def test_low_confidence_answers_never_open_the_breaker():
    breaker = CircuitBreaker(failure_threshold=2, window_s=60, cooldown_s=60)
    breakers = {strategy: breaker for strategy in Strategy}
    primary = Backend("sagemaker", "none", confidence=0.2)
    for _ in range(5):
        decision = route(primary, Backend("openai", "none"), breakers=breakers)
        assert decision.fallback_reason == "low_confidence"
    assert breaker.allow() and len(primary.prompts) == 5
    assert primary_failed("low_confidence") is None  # says nothing of the primary's health


def test_the_decision_says_when_the_live_registry_is_not_the_one_calibrated_on():
    same = route(Backend("sagemaker", "none", confidence=0.9), None)
    other = route(Backend("sagemaker", "none", confidence=0.9), None, digest="0" * 64)
    unknown = route(Backend("sagemaker", "none", confidence=0.9), None, digest=None)
    assert (same.threshold_registry_differs, other.threshold_registry_differs, unknown.threshold_registry_differs) == (
        False, True, None)


# -- the confidence of an answer from the engine's logprobs -----------------------------------------
def tokens(*pairs):
    return [TokenLogprob(token, logprob) for token, logprob in pairs]


def test_the_confidence_is_the_answers_own_tokens_and_the_stop_token():
    listed = tokens(("recap", -0.2), ("_email", -0.3), ("<|im_end|>", -0.05))
    assert answer_confidence("recap_email", 0, listed) == pytest.approx(math.exp(-0.55))


def test_the_reasoning_of_a_strategy_that_reasons_is_not_counted():
    text = "The user wants a recap of the call.\nAnswer: recap"
    listed = tokens(("The", -2.0), (" user", -1.0), (" wants", -3.0), (" a", -0.5), (" recap", -0.7), (" of", -0.1),
                    (" the", -0.1), (" call", -0.9), (".", -0.2), ("\n", 0.0), ("Answer", 0.0), (":", 0.0),
                    (" rec", -0.4), ("ap", -0.1), ("<|im_end|>", 0.0))
    prompt = build_prompt(Strategy.FEW_SHOT_COT, [Message(role="user", content="hi")],
                          {"recap": Task("recap", "r")}, None)
    assert prompt.answer_start(text) == len(text) - len("recap")
    assert answer_confidence(text, prompt.answer_start(text), listed) == pytest.approx(math.exp(-0.5))


def test_a_stop_token_listed_with_empty_text_counts():
    assert answer_confidence("none", 0, tokens(("none", -0.1), ("", -0.2))) == pytest.approx(math.exp(-0.3))


@pytest.mark.parametrize(
    "listed",
    [
        [],
        tokens(("re", -0.1)),  # does not cover the answer
        tokens(("other", -0.1)),  # not the answer's text (a stop-like token only)
        tokens(("re", -0.1), ("cap", -9999.0)),  # vLLM's hole
        tokens(("re", -0.1), ("cap", float("nan"))),
        tokens(("re", -0.1), ("cap", 0.5)),
    ],
)
def test_logprobs_that_do_not_spell_the_answer_give_no_confidence(listed):
    with pytest.raises(NoConfidence):
        answer_confidence("recap", 0, listed)


@pytest.mark.parametrize(
    "choice",
    [{}, {"logprobs": None}, {"logprobs": {"content": None}}, {"logprobs": {"content": [{"token": 1, "logprob": 0}]}},
     {"logprobs": {"content": [{"token": "a", "logprob": True}]}}, {"logprobs": {"content": ["a"]}}],
)
def test_a_choice_without_logprobs_in_vllms_shape_gives_no_confidence(choice):
    with pytest.raises(NoConfidence):
        logprobs_of(choice)


# -- thresholds from the environment ------------------------------------------------------------------
def entry(**overrides):
    return {"strategy": "zero_shot", "adapter": "base", "threshold": 0.62, "tasks_sha256": DIGEST, **overrides}


def env(*entries):
    import json

    return {"TASKROUTER_CONFIDENCE_THRESHOLDS": json.dumps(list(entries))}


def test_the_serving_adapters_thresholds_apply_and_no_others():
    read = thresholds_from_env(env(entry(), entry(strategy="react", threshold=0.4), entry(adapter="sales-v2",
                                                                                            threshold=0.9)), "base")
    assert read == {Strategy.ZERO_SHOT: Threshold(0.62, DIGEST), Strategy.REACT: Threshold(0.4, DIGEST)}
    assert thresholds_from_env(env(entry(adapter="sales-v2")), "sales-v2") == {Strategy.ZERO_SHOT: Threshold(0.62, DIGEST)}
    assert thresholds_from_env({}, "base") == {} == thresholds_from_env({"TASKROUTER_CONFIDENCE_THRESHOLDS": " "}, "base")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (env(entry(threshold=0)), "threshold"),
        (env(entry(threshold=1.5)), "threshold"),
        (env(entry(strategy="fast")), "strategy"),
        (env(entry(tasks_sha256="abc")), "tasks_sha256"),
        (env(entry(extra=1)), "unknown field"),
        (env(entry(), entry(threshold=0.5)), "two thresholds"),
        ({"TASKROUTER_CONFIDENCE_THRESHOLDS": "0.6"}, "array"),
        ({"TASKROUTER_CONFIDENCE_THRESHOLDS": "[{"}, "JSON"),
    ],
)
def test_thresholds_that_cannot_be_used_are_refused_naming_the_field(value, named):
    with pytest.raises(SettingsError) as refused:
        thresholds_from_env(value, "base")
    assert "TASKROUTER_CONFIDENCE_THRESHOLDS" in str(refused.value) and named.lower() in str(refused.value).lower()


def test_the_request_path_works_with_an_allow_list_and_a_threshold():
    req = RouteRequest(conversation=[Message(role="user", content="hi")], tasks=["follow_up_email"])
    decision = route(Backend("sagemaker", "follow_up_email", confidence=0.2), Backend("openai", "follow_up_email"),
                     req=req)
    assert (decision.task, decision.fallback_reason) == ("follow_up_email", "low_confidence")


def test_a_hedged_fallback_already_asked_is_the_escalations_first_attempt():
    """The primary answers after the hedge started the fallback: the escalation waits for that call,
    rather than asking the fallback a second time."""
    hedged = dataclasses.replace(settings(), hedge_after_s=0.05)
    fallback = Backend("openai", "prepare_linkedin_post", delay_s=0.3)
    router = Router(Registry(), Backend("sagemaker", "follow_up_email", delay_s=0.15, confidence=0.1), fallback, hedged)
    decision = router.route(request())
    assert (decision.backend, decision.fallback_reason, decision.task) == ("openai", "low_confidence", "prepare_linkedin_post")
    assert len(fallback.prompts) == 1
