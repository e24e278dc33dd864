"""Capture's router side (docs/capture.md): the sampling draws, redaction, the record, its settings,
the kill switch and the bounded sender, each without AWS."""

from __future__ import annotations

import json
import random
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from taskrouter.adapters.capture_sink import MAX_EVENT_PAYLOAD_BYTES, Dropped, LambdaCaptureSink
from taskrouter.adapters.capture_switch import MAX_AGE_S, AlwaysOn, SsmCaptureSwitch
from taskrouter.adapters.settings import RuntimeSettings, SettingsError
from taskrouter.core.capture import (
    SCHEMA,
    Draw,
    SamplingPolicy,
    ServingAdapter,
    build_record,
    draw,
    encode,
)
from taskrouter.core.prompting import MAX_TRANSCRIPT_BYTES, transcript_bound
from taskrouter.core.redaction import redact
from taskrouter.core.request import Message, RouteRequest, Strategy
from taskrouter.core.router import NOT_ASKED, Decision, PrimaryOutcome, Router
from taskrouter.core.tasks import Task, tasks_sha256
from tests.unit.fakes import SETTINGS, Backend, Clock, Registry, request

DOC = Path(__file__).resolve().parents[2] / "docs" / "capture.md"
TURNS = 20_000
TOLERANCE = 0.015  # ~5 standard deviations of a share's estimate over TURNS turns


def draws(policy: SamplingPolicy, *, primary_decided: bool = True, unseen: bool = False, seed: int = 7) -> list[Draw | None]:
    rng = random.Random(seed)
    return [draw(policy, primary_decided=primary_decided, unseen=unseen, random=rng.random) for _ in range(TURNS)]


def rate(results: list[Draw | None], keep=lambda d: True) -> float:
    return sum(1 for d in results if d is not None and keep(d)) / len(results)


# -- sampling --------------------------------------------------------------------------------------
def test_a_primary_turn_is_drawn_at_the_share_into_the_uniform_sample():
    results = draws(SamplingPolicy(share=0.2, fallback_share=0.9))
    assert rate(results) == pytest.approx(0.2, abs=TOLERANCE)
    assert {(d.probability, d.uniform, d.reason) for d in results if d} == {(0.2, True, "primary")}


def test_unseen_tasks_add_a_second_draw_and_the_total_probability():
    policy = SamplingPolicy(share=0.2, fallback_share=0.0, unseen_share=0.5)
    results = draws(policy, unseen=True)
    assert rate(results) == pytest.approx(0.2 + 0.8 * 0.5, abs=TOLERANCE)
    assert rate(results, lambda d: d.uniform) == pytest.approx(0.2, abs=TOLERANCE)
    assert {(d.uniform, d.reason) for d in results if d} == {(True, "primary"), (False, "unseen")}
    assert all(d.probability == pytest.approx(0.6) for d in results if d)


def test_the_uniform_sample_stays_uniform_whatever_the_oversampling():
    """A turn with unseen tasks is no likelier to be in the uniform sample than one without."""
    policy = SamplingPolicy(share=0.25, fallback_share=0.0, unseen_share=1.0)
    seen, unseen = draws(policy, unseen=False, seed=1), draws(policy, unseen=True, seed=2)
    uniform_seen, uniform_unseen = rate(seen, lambda d: d.uniform), rate(unseen, lambda d: d.uniform)
    assert uniform_seen == pytest.approx(0.25, abs=TOLERANCE)
    assert uniform_unseen == pytest.approx(0.25, abs=TOLERANCE)
    assert rate(unseen) == 1.0 and rate(seen) == pytest.approx(0.25, abs=TOLERANCE)


def test_a_fallback_turn_is_drawn_at_the_fallback_share_never_uniform_nor_oversampled():
    results = draws(SamplingPolicy(share=0.9, fallback_share=0.3, unseen_share=1.0), primary_decided=False, unseen=True)
    assert rate(results) == pytest.approx(0.3, abs=TOLERANCE)
    assert {(d.probability, d.uniform, d.reason) for d in results if d} == {(0.3, False, "fallback")}


@pytest.mark.parametrize(
    ("policy", "unseen", "expected"),
    [
        (SamplingPolicy(1.0, 0.0), False, 1.0),
        (SamplingPolicy(0.0, 1.0), False, 0.0),
        (SamplingPolicy(0.0, 0.0, unseen_share=0.0), True, 0.0),
        (SamplingPolicy(0.0, 0.0, unseen_share=1.0), True, 1.0),
    ],
)
def test_shares_of_zero_and_one_are_exact(policy, unseen, expected):
    assert rate(draws(policy, unseen=unseen)) == expected


def test_a_seeded_generator_draws_the_same_turns():
    policy = SamplingPolicy(share=0.1, fallback_share=0.0, unseen_share=0.3)
    assert draws(policy, unseen=True, seed=11) == draws(policy, unseen=True, seed=11)


def test_the_serving_adapter_s_unseen_tasks():
    names = ["prepare_linkedin_post", "follow_up_email", "create_one_minute_pitch"]
    assert ServingAdapter().unseen(names) == ()  # base: trained on no task, so none is unseen
    assert ServingAdapter("base", frozenset({"follow_up_email"})).unseen(names) == ()
    assert ServingAdapter("v3").unseen(names) == ()  # no manifest given: nothing counted
    manifest = ServingAdapter("v3", frozenset({"follow_up_email"}))
    assert manifest.unseen(names) == ("create_one_minute_pitch", "prepare_linkedin_post")


# -- redaction -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to dana.smith+acme@acme-corp.co.uk.", "write to [email]."),
        ("mail Ana at ana@example.com or ana@exemple.fr", "mail Ana at [email] or [email]"),
        ("call +33 6 12 34 56 78 tomorrow", "call [phone] tomorrow"),
        ("her cell is (555) 123-4567.", "her cell is [phone]."),
        ("tel: +1-555-123-4567", "tel: [phone]"),
        ("06.12.34.56.78 or 0612345678", "[phone] or [phone]"),
        ("+44 (0)20 7946 0958", "[phone]"),
        ("the office line 555 1234", "the office line [phone]"),
    ],
)
def test_emails_and_phone_numbers_are_redacted(text, expected):
    assert redact(text, ("email", "phone")) == expected


@pytest.mark.parametrize(
    "text",
    [
        "on 2024-05-01 we met", "the 12/05/2024 call", "from 2019-2024", "order 12345", "at 10:30",
        "1,500,000 dollars", "version 1.2.3", "Dana Smith, 12 rue de la Paix, 75002 Paris",  # names and addresses stay
    ],
)
def test_what_redaction_leaves(text):
    assert redact(text, ("email", "phone")) == text


def test_each_kind_is_redacted_only_when_asked():
    text = "ana@example.com, +33 6 12 34 56 78"
    assert redact(text, ("email",)) == "[email], +33 6 12 34 56 78"
    assert redact(text, ("phone",)) == "ana@example.com, [phone]"
    assert redact(text, ()) == text


# -- the record ------------------------------------------------------------------------------------
TASKS = {
    "follow_up_email": Task("follow_up_email", "Draft a follow-up email.", ("one", "two", "three", "four")),
    "prepare_linkedin_post": Task("prepare_linkedin_post", "Write a LinkedIn post."),
    "create_one_minute_pitch": Task("create_one_minute_pitch", "Write a pitch."),
}
CONVERSATION = [
    Message(role="user", content="I met Dana (dana@acme.com, +1 555 123 4567) today."),
    Message(role="assistant", content="Noted: dana@acme.com. Shall I call 555-123-4567?"),
    Message(role="user", content="Send her a follow-up email."),
]
DECIDED_AT = datetime(2026, 12, 2, 7, 49, 24, 123456, tzinfo=UTC)


def decision(**fields) -> Decision:
    defaults = dict(
        task="follow_up_email", event="start", backend="sagemaker", fallback_reason=None, ignored_tasks=(),
        strategy=Strategy.ZERO_SHOT, current_task=None,
        shown_tasks=tuple(TASKS[name] for name in sorted(TASKS)),
        primary=PrimaryOutcome(answer="follow_up_email", latency_ms=41.5), registry=TASKS,
    )  # fmt: skip
    return Decision(**{**defaults, **fields})


def record(**fields) -> dict:
    arguments = dict(
        record_id="0" * 32, decided_at=DECIDED_AT, conversation=CONVERSATION, decision=decision(),
        adapter=ServingAdapter("v3", frozenset({"follow_up_email"})), sampled=Draw(0.25, True, "primary"),
        latency_ms=57.25, redaction=("email", "phone"), requested_tasks=None,
    )  # fmt: skip
    return build_record(**{**arguments, **fields})


def documented_fields() -> set[str]:
    section = DOC.read_text(encoding="utf-8").split("\n## The record", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n| field |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", table, re.MULTILINE))


def test_the_record_has_the_documented_fields_but_the_teacher_s():
    assert set(record()) == documented_fields() - {"teacher"}


def test_the_record_s_fields():
    captured = record()
    assert captured["schema"] == SCHEMA == 2
    assert captured["id"] == "0" * 32
    assert captured["time"] == "2026-12-02T07:49:24.123Z"
    assert captured["current_task"] is None
    assert [t["name"] for t in captured["tasks"]] == ["create_one_minute_pitch", "follow_up_email", "prepare_linkedin_post"]
    assert captured["tasks"][1] == {
        "name": "follow_up_email", "description": "Draft a follow-up email.", "examples": ["one", "two", "three"],
    }  # the examples the prompt showed  # fmt: skip
    assert captured["registry_sha256"] == tasks_sha256(TASKS.values())  # an evaluation report's digest
    assert captured["strategy"] == "zero_shot" and captured["adapter"] == "v3"
    assert captured["unseen_tasks"] == ["create_one_minute_pitch", "prepare_linkedin_post"]
    assert captured["decision"] == {"task": "follow_up_email", "event": "start", "backend": "sagemaker", "fallback_reason": None}
    assert captured["primary"] == {"answer": "follow_up_email", "probability": None, "latency_ms": 41.5}
    assert captured["latency_ms"] == 57.25
    assert captured["sampling"] == {"probability": 0.25, "uniform": True, "reason": "primary"}
    assert captured["redaction"] == ["email", "phone"]
    assert captured["requested_tasks"] is None and captured["running_task"] is None  # no allow-list, none running


def test_the_record_keeps_the_request_s_allow_list_as_sent_and_the_running_task_it_left_out():
    """A turn routed with `tasks: ["follow_up_email"]` while a pitch runs: the record says what the request
    allowed (the whole registry was not: `tasks` alone cannot tell), and the running task's text, which
    its `tasks` lacks."""
    pitch = TASKS["create_one_minute_pitch"]
    allowed = record(
        requested_tasks=["follow_up_email", "ghost_task", "follow_up_email"],
        decision=decision(current_task=pitch.name, shown_tasks=(TASKS["follow_up_email"],), event="switch"),
    )
    assert allowed["requested_tasks"] == ["follow_up_email", "ghost_task", "follow_up_email"]  # as sent
    assert [task["name"] for task in allowed["tasks"]] == ["follow_up_email"]
    assert allowed["running_task"] == {"name": pitch.name, "description": "Write a pitch.", "examples": []}
    inside = record(requested_tasks=[], decision=decision(current_task="follow_up_email"))  # among the shown tasks
    assert inside["requested_tasks"] == [] and inside["running_task"] is None


def test_a_routed_turn_records_what_its_request_allowed():
    """Through the router: the allow-list as the request sent it, the running task outside it."""
    router = Router(Registry(), Backend("sagemaker", "follow_up_email"), None, SETTINGS)
    made = router.route(RouteRequest(
        conversation=[Message(role="user", content="hi")], current_task="prepare_linkedin_post", tasks=["follow_up_email"]
    ))  # fmt: skip
    captured = record(decision=made, requested_tasks=["follow_up_email"])
    assert [task["name"] for task in captured["tasks"]] == ["follow_up_email"]
    assert captured["current_task"] == "prepare_linkedin_post"
    assert captured["running_task"]["name"] == "prepare_linkedin_post"


def test_every_message_is_redacted_the_assistant_s_too():
    conversation = record()["conversation"]
    assert conversation == [
        {"role": "user", "content": "I met Dana ([email], [phone]) today."},
        {"role": "assistant", "content": "Noted: [email]. Shall I call [phone]?"},
        {"role": "user", "content": "Send her a follow-up email."},
    ]
    text = encode(record())
    assert b"acme.com" not in text and b"555" not in text


def test_no_redaction_asked_keeps_the_messages():
    captured = record(redaction=())
    assert captured["redaction"] == []
    assert [m["content"] for m in captured["conversation"]] == [m.content for m in CONVERSATION]


def test_the_record_holds_the_messages_the_prompt_showed():
    long = [Message(role="user", content="x" * 3000), Message(role="assistant", content="y" * 900),
            Message(role="user", content="z" * 200)]  # fmt: skip
    shown = record(conversation=long)["conversation"]
    assert [m["role"] for m in shown] == ["assistant", "user"]  # the first is past the transcript's bound
    assert sum(len(m["content"]) for m in shown) <= MAX_TRANSCRIPT_BYTES


def test_the_record_holds_the_transcript_a_small_model_s_prompt_showed():
    """A model of 8,192 tokens is shown 1,365 bytes of transcript: the record holds what it saw, no more."""
    bound = transcript_bound(8192)
    long = [Message(role="user", content="x" * 1000), Message(role="assistant", content="y" * 900),
            Message(role="user", content="z" * 200)]  # fmt: skip
    shown = record(conversation=long, decision=decision(transcript=bound))["conversation"]
    assert [m["role"] for m in shown] == ["assistant", "user"]
    assert sum(len(m["content"]) for m in shown) <= bound.max_bytes < MAX_TRANSCRIPT_BYTES


def test_a_base_model_record_has_no_unseen_tasks_and_a_fallback_one_no_primary_answer():
    captured = record(
        adapter=ServingAdapter(),
        decision=decision(backend="openai", fallback_reason="timeout", primary=PrimaryOutcome(latency_ms=250.0)),
        sampled=Draw(0.5, False, "fallback"),
    )
    assert captured["adapter"] == "base" and captured["unseen_tasks"] == []
    assert captured["primary"] == {"answer": None, "probability": None, "latency_ms": 250.0}
    assert captured["sampling"] == {"probability": 0.5, "uniform": False, "reason": "fallback"}


def test_a_record_is_one_line_of_json():
    text = encode(record(conversation=[Message(role="user", content="deux\nlignes é 漢字")]))
    assert text.count(b"\n") == 0
    assert json.loads(text.decode("utf-8"))["conversation"][0]["content"] == "deux\nlignes é 漢字"


# -- what the core's decision gives a record -------------------------------------------------------
def test_a_decision_records_the_primary_s_answer_and_latency_when_it_decided():
    made = Router(Registry(), Backend("sagemaker", "none"), Backend("openai", "follow_up_email"), SETTINGS).route(request())
    assert made.primary.answer == "none" and made.primary.latency_ms is not None and made.primary.latency_ms >= 0
    assert [task.name for task in made.shown_tasks] == ["follow_up_email", "prepare_linkedin_post"]
    assert made.registry is not None and set(made.registry) == {"follow_up_email", "prepare_linkedin_post"}


def test_a_decision_the_fallback_made_has_no_primary_answer():
    failed = Router(Registry(), Backend("sagemaker", "bogus"), Backend("openai", "none"), SETTINGS).route(request())
    assert failed.fallback_reason == "invalid_output"
    assert failed.primary.answer is None and failed.primary.latency_ms is not None
    not_asked = Router(Registry(), None, Backend("openai", "none"), SETTINGS).route(request())
    assert not_asked.primary == NOT_ASKED


def test_a_primary_past_its_deadline_records_the_time_waited():
    release = threading.Event()
    slow = Backend("sagemaker", "follow_up_email", block_on=release)
    made = Router(Registry(), slow, Backend("openai", "none"), SETTINGS).route(request())
    release.set()
    assert made.fallback_reason == "timeout" and made.primary.answer is None
    assert made.primary.latency_ms >= SETTINGS.primary_timeout_s * 1000


def test_a_decision_records_the_running_task_the_router_used_and_the_allowed_tasks():
    router = Router(Registry(), Backend("sagemaker", "follow_up_email"), None, SETTINGS)
    made = router.route(RouteRequest(
        conversation=[Message(role="user", content="hi")], current_task="gone_task", tasks=["follow_up_email"]
    ))  # fmt: skip
    assert made.current_task is None  # unknown to the registry: none
    assert [task.name for task in made.shown_tasks] == ["follow_up_email"]
    assert router.route(request("follow_up_email")).current_task == "follow_up_email"


# -- settings --------------------------------------------------------------------------------------
BASE = {"TASKROUTER_TABLE_NAME": "tasks"}


def test_capture_settings_default_to_off_with_every_share_1():
    settings = RuntimeSettings.from_env(BASE)
    assert not settings.capture.enabled and settings.capture.function_name is None
    assert settings.capture.policy == SamplingPolicy(share=1.0, fallback_share=1.0, unseen_share=1.0)
    assert settings.capture.redaction == ("email", "phone")
    assert settings.capture.send_timeout_s == 0.1 and settings.capture.switch_parameter is None
    assert settings.adapter == ServingAdapter("base", None)


def test_capture_settings_from_the_environment():
    settings = RuntimeSettings.from_env({
        **BASE, "TASKROUTER_CAPTURE_FUNCTION": "taskrouter-dev-teacher", "TASKROUTER_CAPTURE_SHARE": "0.05",
        "TASKROUTER_CAPTURE_FALLBACK_SHARE": "0", "TASKROUTER_CAPTURE_UNSEEN_SHARE": "0.5",
        "TASKROUTER_CAPTURE_REDACT": " Phone ", "TASKROUTER_CAPTURE_SEND_TIMEOUT_MS": "80",
        "TASKROUTER_CAPTURE_PARAMETER": "/taskrouter/dev/capture", "TASKROUTER_ADAPTER_NAME": "v3",
        "TASKROUTER_ADAPTER_TASKS": "follow_up_email, prepare_linkedin_post",
    })  # fmt: skip
    capture = settings.capture
    assert capture.enabled and capture.function_name == "taskrouter-dev-teacher"
    assert capture.policy == SamplingPolicy(share=0.05, fallback_share=0.0, unseen_share=0.5)
    assert capture.redaction == ("phone",) and capture.send_timeout_s == 0.08
    assert capture.switch_parameter == "/taskrouter/dev/capture"
    assert settings.adapter == ServingAdapter("v3", frozenset({"follow_up_email", "prepare_linkedin_post"}))
    assert RuntimeSettings.from_env({**BASE, "TASKROUTER_CAPTURE_REDACT": "none"}).capture.redaction == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TASKROUTER_CAPTURE_SHARE", "1.5"),
        ("TASKROUTER_CAPTURE_SHARE", "half"),
        ("TASKROUTER_CAPTURE_FALLBACK_SHARE", "-0.1"),
        ("TASKROUTER_CAPTURE_UNSEEN_SHARE", "2"),
        ("TASKROUTER_CAPTURE_SEND_TIMEOUT_MS", "5"),
        ("TASKROUTER_CAPTURE_SEND_TIMEOUT_MS", "5000"),
        ("TASKROUTER_CAPTURE_REDACT", "email,ssn"),
        ("TASKROUTER_CAPTURE_REDACT", "none,email"),
        ("TASKROUTER_ADAPTER_TASKS", "follow_up_email,Not A Task"),
    ],
)
def test_a_bad_capture_setting_is_refused_naming_it(name, value):
    with pytest.raises(SettingsError, match=name):
        RuntimeSettings.from_env({**BASE, name: value})


# -- the kill switch -------------------------------------------------------------------------------
def test_the_switch_is_read_at_most_every_minute_and_keeps_its_state_when_ssm_fails():
    clock, reads, values = Clock(), [], ["off"]

    def read() -> str:
        reads.append(1)
        value = values[0]
        if isinstance(value, Exception):
            raise value
        return value

    switch = SsmCaptureSwitch(read, clock=clock)
    assert switch.is_on() is False and len(reads) == 1
    values[0] = "on"
    clock.now = MAX_AGE_S - 0.1
    assert switch.is_on() is False and len(reads) == 1  # cached
    clock.now = MAX_AGE_S
    assert switch.is_on() is True and len(reads) == 2
    values[0] = ConnectionError("ssm down")
    clock.now = 2 * MAX_AGE_S
    assert switch.is_on() is True  # SSM failing keeps the last state
    values[0] = " OFF\n"
    clock.now = 3 * MAX_AGE_S
    assert switch.is_on() is False
    values[0] = "maybe"
    clock.now = 4 * MAX_AGE_S
    assert switch.is_on() is False  # neither on nor off: the last state stays


def test_no_parameter_or_an_unreadable_one_at_start_means_on():
    def fail() -> str:
        raise ConnectionError("ssm down")

    assert AlwaysOn().is_on() and SsmCaptureSwitch(fail).is_on()


# -- the sender ------------------------------------------------------------------------------------
class FakeLambda:
    def __init__(self, answer=None, raises: Exception | None = None) -> None:
        self.answer, self.raises, self.calls = answer or {"StatusCode": 202}, raises, []

    def invoke(self, **kwargs):
        self.calls.append(kwargs)
        if self.raises is not None:
            raise self.raises
        return self.answer


def test_the_sender_invokes_the_teacher_asynchronously():
    client = FakeLambda()
    assert LambdaCaptureSink(client, "teacher").send(b"{}") is None
    assert client.calls == [{"FunctionName": "teacher", "InvocationType": "Event", "Payload": b"{}"}]


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        (FakeLambda(raises=ReadTimeoutError(endpoint_url="http://x")), "timeout"),
        (FakeLambda(raises=ConnectTimeoutError(endpoint_url="http://x")), "timeout"),
        (FakeLambda(raises=ClientError({"Error": {"Code": "TooManyRequestsException"}}, "Invoke")), "throttled"),
        (FakeLambda(raises=ClientError({"Error": {"Code": "AccessDeniedException"}}, "Invoke")), "error"),
        (FakeLambda(raises=EndpointConnectionError(endpoint_url="http://x")), "error"),
        (FakeLambda({"StatusCode": 200}), "error"),
    ],
)
def test_a_record_that_cannot_be_sent_is_dropped_with_its_cause(client, reason):
    dropped = LambdaCaptureSink(client, "teacher").send(b"{}")
    assert isinstance(dropped, Dropped) and dropped.reason == reason
    assert len(client.calls) == 1  # one try


def test_a_record_over_lambda_s_event_limit_is_dropped_without_a_call():
    client = FakeLambda()
    dropped = LambdaCaptureSink(client, "teacher").send(b"x" * (MAX_EVENT_PAYLOAD_BYTES + 1))
    assert dropped is not None and dropped.reason == "too_large" and client.calls == []
