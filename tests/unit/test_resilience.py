"""Hedging, retries, the circuit breaker and the operations mode, with in-memory backends."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from moto import mock_aws

from taskrouter.adapters.ssm_ops_mode import SsmOpsMode
from taskrouter.core.backends import Answer, BackendError, BackendThrottled
from taskrouter.core.errors import NoBackendAvailable
from taskrouter.core.resilience import CircuitBreaker, FixedOpsMode, OpsMode
from taskrouter.core.request import RouteRequest, Strategy
from taskrouter.core.router import Router, RouterSettings
from tests.unit.fakes import Clock, Registry, request


def settings(**overrides):
    values = dict(
        default_strategy=Strategy.ZERO_SHOT, primary_timeout_s=1.0, fallback_timeout_s=2.0, retry_after_s=2,
        hedge_after_s=None, fallback_retry_min_s=0.1,
    )
    return RouterSettings(**{**values, **overrides})


class Script:
    """A backend answering from a list: each item an answer, or an exception to raise."""

    def __init__(self, name, *steps, delay_s=0.0, block_on=None):
        self.name, self.steps, self.delay_s, self.calls = name, list(steps), delay_s, 0
        self.block_on = block_on
        self.lock = threading.Lock()

    def decide(self, prompt, timeout_s):
        with self.lock:
            step = self.steps[min(self.calls, len(self.steps) - 1)]
            self.calls += 1
        time.sleep(self.delay_s)
        if self.block_on is not None:
            self.block_on.wait(timeout=10)
        if isinstance(step, Exception):
            raise step
        return Answer(prompt.parse(step))


# --- hedging ---------------------------------------------------------------------------------


def test_hedged_fallback_wins_when_the_primary_is_slow():
    release = threading.Event()
    primary = Script("sagemaker", "follow_up_email", block_on=release)
    fallback = Script("openai", "prepare_linkedin_post")
    decision = Router(Registry(), primary, fallback, settings(primary_timeout_s=5, hedge_after_s=0.05)).route(request())
    assert not release.is_set(), "the hedged answer is returned while the primary is still out"
    release.set()
    assert (decision.backend, decision.task, decision.fallback_reason) == ("openai", "prepare_linkedin_post", "timeout")


def test_primary_answering_after_the_hedge_started_still_wins_if_first():
    primary = Script("sagemaker", "follow_up_email", delay_s=0.08)
    fallback = Script("openai", "prepare_linkedin_post", delay_s=1.5)
    decision = Router(Registry(), primary, fallback, settings(primary_timeout_s=1.0, hedge_after_s=0.03)).route(request())
    assert (decision.backend, decision.fallback_reason) == ("sagemaker", None)
    assert fallback.calls == 1  # it was started in parallel, then ignored


def test_no_hedge_when_the_primary_answers_before_the_delay():
    fallback = Script("openai", "none")
    Router(Registry(), Script("sagemaker", "none"), fallback, settings(hedge_after_s=0.1)).route(request())
    assert fallback.calls == 0


def test_a_failed_hedge_leaves_the_primary_its_deadline_then_is_retried():
    primary = Script("sagemaker", "follow_up_email", delay_s=0.15)
    fallback = Script("openai", BackendError("500"), "none")
    decision = Router(Registry(), primary, fallback, settings(primary_timeout_s=2.0, hedge_after_s=0.02)).route(request())
    assert (decision.backend, decision.task) == ("sagemaker", "follow_up_email")


def test_timeout_with_a_failed_hedge_counts_it_as_the_first_attempt():
    release = threading.Event()
    primary = Script("sagemaker", "follow_up_email", block_on=release)
    fallback = Script("openai", BackendError("500"), "prepare_linkedin_post")
    decision = Router(Registry(), primary, fallback, settings(primary_timeout_s=0.3, hedge_after_s=0.02)).route(request())
    release.set()
    assert (decision.backend, decision.fallback_reason, decision.task) == ("openai", "timeout", "prepare_linkedin_post")
    assert fallback.calls == 2


# --- fallback retries ------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [BackendError("500"), BackendThrottled("429")])
def test_fallback_is_retried_once(failure):
    fallback = Script("openai", failure, "none")
    decision = Router(Registry(), None, fallback, settings()).route(request())
    assert (decision.backend, decision.task, fallback.calls) == ("openai", None, 2)


def test_fallback_is_not_retried_a_second_time():
    fallback = Script("openai", BackendError("500"), BackendError("500"), "none")
    with pytest.raises(NoBackendAvailable, match=r"fallback failed: server error \(HTTP 500\)"):
        Router(Registry(), None, fallback, settings()).route(request())
    assert fallback.calls == 2


def test_no_retry_when_the_budget_is_spent():
    fallback = Script("openai", BackendError("500"), "none", delay_s=0.15)
    with pytest.raises(NoBackendAvailable):
        Router(Registry(), None, fallback, settings(fallback_timeout_s=0.2, fallback_retry_min_s=0.1)).route(request())
    assert fallback.calls == 1


def test_invalid_output_of_the_fallback_is_not_retried():
    fallback = Script("openai", "send_invoice", "none")
    with pytest.raises(NoBackendAvailable, match="fallback answered invalid output"):
        Router(Registry(), None, fallback, settings()).route(request())
    assert fallback.calls == 1


# --- circuit breaker -------------------------------------------------------------------------


def test_breaker_states():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, window_s=10, cooldown_s=5, clock=clock)
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    clock.now = 11  # the first failure leaves the window
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 15.9
    assert not breaker.allow()
    clock.now = 16
    assert breaker.state == "half_open"
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # nobody else while it is out
    breaker.record_failure()  # the probe failed: a new cool-down
    assert breaker.state == "open"
    clock.now = 21
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_router_opens_the_circuit_then_probes():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, window_s=60, cooldown_s=30, clock=clock)
    primary = Script("sagemaker", BackendError("500"), BackendError("500"), "follow_up_email")
    router = Router(Registry(), primary, Script("openai", "none"), settings(), breakers={Strategy.ZERO_SHOT: breaker})
    assert [router.route(request()).fallback_reason for _ in range(3)] == ["error", "error", "circuit_open"]
    assert primary.calls == 2
    clock.now = 30
    probe = router.route(request())
    assert (probe.backend, probe.task, breaker.state) == ("sagemaker", "follow_up_email", "closed")


def test_invalid_output_does_not_open_the_circuit():
    breaker = CircuitBreaker(failure_threshold=1, window_s=60, cooldown_s=30)
    router = Router(Registry(), Script("sagemaker", "prose"), Script("openai", "none"), settings(), breakers={Strategy.ZERO_SHOT: breaker})
    assert router.route(request()).fallback_reason == "invalid_output"
    assert breaker.state == "closed"


def test_a_timeout_counts_against_the_primary_when_its_call_ends():
    breaker = CircuitBreaker(failure_threshold=1, window_s=60, cooldown_s=30)
    release = threading.Event()
    primary = Script("sagemaker", "none", block_on=release)
    router = Router(Registry(), primary, Script("openai", "none"), settings(primary_timeout_s=0.05), breakers={Strategy.ZERO_SHOT: breaker})
    assert router.route(request()).fallback_reason == "timeout"
    release.set()  # the late answer comes after the deadline: a missed deadline, not a success
    assert eventually(lambda: breaker.state == "open")


def eventually(condition, timeout_s=5.0):
    """Whether `condition` holds within `timeout_s` (a backend call still ending in its thread)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_hung_primary_behind_a_fast_hedge_opens_the_circuit():
    """The hedge answers every request, yet each primary call that ends past its deadline counts."""
    breaker = CircuitBreaker(failure_threshold=3, window_s=60, cooldown_s=30)
    primary = Script("sagemaker", "follow_up_email", delay_s=0.25)  # ends, but after the 0.1 s deadline
    fallback = Script("openai", "none")
    router = Router(
        Registry(), primary, fallback, settings(primary_timeout_s=0.1, hedge_after_s=0.01), breakers={Strategy.ZERO_SHOT: breaker}
    )
    for _ in range(3):
        assert router.route(request()).fallback_reason == "timeout"
    assert eventually(lambda: breaker.state == "open")
    decisions = [router.route(request()) for _ in range(5)]
    assert [d.fallback_reason for d in decisions] == ["circuit_open"] * 5
    assert primary.calls == 3, "the dead endpoint is no longer called"


@pytest.mark.parametrize(("late", "after_probe"), [(False, "closed"), (True, "open")])
def test_a_probe_won_by_the_hedge_still_decides_the_circuit(late, after_probe):
    """The half-open probe's primary call is still out when the hedged fallback answers: its outcome,
    recorded when the call ends, closes the circuit (an answer in time) or opens it again (late)."""
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, window_s=60, cooldown_s=15, clock=clock)
    release = threading.Event()
    primary = Script("sagemaker", "follow_up_email", block_on=release)
    router = Router(
        Registry(), primary, Script("openai", "none"),
        settings(primary_timeout_s=0.3 if late else 5.0, hedge_after_s=0.01), breakers={Strategy.ZERO_SHOT: breaker},
    )
    breaker.record_failure()
    clock.now = 16  # half-open: the next request is the probe
    probe = router.route(request())
    assert (probe.backend, probe.fallback_reason) == ("openai", "timeout")  # the hedge won
    if late:
        time.sleep(0.35)  # past the probe's deadline
    release.set()
    assert eventually(lambda: primary.calls == 1 and breaker.state == after_probe)
    clock.now = 40  # any cool-down is over: the circuit is never stuck (no hedge now, to see the primary decide)
    unhedged = Router(Registry(), primary, Script("openai", "none"), settings(), breakers={Strategy.ZERO_SHOT: breaker})
    assert unhedged.route(request()).backend == "sagemaker"


def test_a_probe_that_never_reports_counts_as_failed_after_the_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, window_s=60, cooldown_s=15, clock=clock)
    breaker.record_failure()
    clock.now = 15
    assert breaker.allow()  # the probe; its call never reports
    clock.now = 29.9
    assert not breaker.allow() and breaker.state == "half_open"
    clock.now = 30  # the probe's lease is over: failed, a new cool-down from then
    assert not breaker.allow() and breaker.state == "open"
    clock.now = 45
    assert breaker.allow()  # the next probe


# --- operations mode -------------------------------------------------------------------------


def test_openai_only_mode_skips_the_primary():
    primary = Script("sagemaker", "follow_up_email")
    router = Router(Registry(), primary, Script("openai", "none"), settings(), ops_mode=FixedOpsMode(OpsMode.OPENAI_ONLY))
    decision = router.route(request())
    assert (decision.backend, decision.fallback_reason, primary.calls) == ("openai", "ops_mode", 0)


def test_primary_first_mode_asks_the_primary():
    router = Router(Registry(), Script("sagemaker", "none"), Script("openai", "none"), settings(),
                    ops_mode=FixedOpsMode(OpsMode.PRIMARY_FIRST))
    assert router.route(request()).backend == "sagemaker"


@pytest.fixture
def ssm(fake_aws_credentials):
    with mock_aws():
        client = boto3.client("ssm", region_name="us-east-1")
        client.put_parameter(Name="/taskrouter/test/ops-mode", Value="primary_first", Type="String")
        yield client


def test_ssm_mode_is_cached_then_reread(ssm):
    clock = Clock()
    reads = []

    def read():
        reads.append(1)
        return ssm.get_parameter(Name="/taskrouter/test/ops-mode")["Parameter"]["Value"]

    mode = SsmOpsMode(read, max_age_s=10, clock=clock)
    assert mode.mode() is OpsMode.PRIMARY_FIRST
    ssm.put_parameter(Name="/taskrouter/test/ops-mode", Value="openai_only", Type="String", Overwrite=True)
    clock.now = 9.9
    assert mode.mode() is OpsMode.PRIMARY_FIRST and len(reads) == 1
    clock.now = 10
    assert mode.mode() is OpsMode.OPENAI_ONLY and len(reads) == 2


def test_ssm_failures_and_bad_values_keep_the_mode_in_force(ssm):
    clock = Clock()
    mode = SsmOpsMode(lambda: ssm.get_parameter(Name="/taskrouter/test/ops-mode")["Parameter"]["Value"], 10, clock)
    ssm.put_parameter(Name="/taskrouter/test/ops-mode", Value="openai_only", Type="String", Overwrite=True)
    assert mode.mode() is OpsMode.OPENAI_ONLY
    ssm.put_parameter(Name="/taskrouter/test/ops-mode", Value="panic", Type="String", Overwrite=True)
    clock.now = 10
    assert mode.mode() is OpsMode.OPENAI_ONLY
    ssm.delete_parameter(Name="/taskrouter/test/ops-mode")
    clock.now = 20
    assert mode.mode() is OpsMode.OPENAI_ONLY


def test_unreadable_parameter_at_start_means_primary_first():
    def fail():
        raise ConnectionError("ssm down")

    assert SsmOpsMode(fail).mode() is OpsMode.PRIMARY_FIRST


def test_each_strategy_has_its_own_circuit():
    """React's long answers missing their deadline open react's circuit, not zero-shot's."""
    react_breaker, zero_shot_breaker = (CircuitBreaker(failure_threshold=1, window_s=60, cooldown_s=30) for _ in range(2))
    primary = Script("sagemaker", BackendError("500"), "follow_up_email")
    fallback = Script("openai", "Thought: t\nObservation: o\nFinal Answer: none", "Thought: t\nObservation: o\nFinal Answer: none")
    router = Router(
        Registry(), primary, fallback, settings(),
        breakers={Strategy.REACT: react_breaker, Strategy.ZERO_SHOT: zero_shot_breaker},
    )
    react = RouteRequest(conversation=request().conversation, strategy=Strategy.REACT)
    assert router.route(react).fallback_reason == "error"
    assert router.route(react).fallback_reason == "circuit_open"
    assert router.route(request()).backend == "sagemaker" and zero_shot_breaker.state == "closed"
