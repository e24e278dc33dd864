"""The teacher function end to end (docs/capture.md): a captured turn in, the teacher (the OpenAI double)
asked, the completed record in the capture bucket (a moto server, or a slow S3 double), `TeacherAgreement`
and `TeacherFailed` as EMF documents; failures lose a sample, never the record; every call ends by a
deadline taken from the invocation's remaining time; a stage that stores nothing still labels and
publishes; no content in any log line."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from taskrouter.composition import teacher_runtime
from taskrouter.adapters.record_store import S3RecordStore

from .apigw import LambdaContext
from .s3_double import SlowS3
from .servers import OpenAIDouble

BUCKET = "taskrouter-test-capture"
SECRET = "Dana's number is SECRET-CONTENT-4417"  # in every conversation: must never reach a log line
MINUTES, EMAIL = "prepare_meeting_minutes", "follow_up_email"


_KEPT = object()  # the primary's answer is the decision's (it decided), or none (the fallback decided alone)


def captured(
    *, decided: str | None = MINUTES, backend: str = "sagemaker", uniform: bool = True, adapter: str | None = "sales-v3",
    strategy: str = "zero_shot", primary: Any = _KEPT, confidence: float | None = None, fallback_reason: str = "timeout",
) -> dict[str, Any]:
    """A record as the router sends it (teacher null). `primary`: the primary's own answer where the fallback
    decided after it (an escalation, `fallback_reason` "low_confidence")."""
    if primary is _KEPT:
        primary = (decided or "none") if backend == "sagemaker" else None
    return {
        "schema": 1,
        "id": uuid.uuid4().hex,
        "time": "2026-12-02T07:49:24.123Z",
        "conversation": [{"role": "user", "content": f"{SECRET}. Write up the minutes of my call with her."}],
        "current_task": None,
        "tasks": [
            {"name": EMAIL, "description": "Draft a follow-up email after a call.", "examples": ["Send Dana a follow-up"]},
            {"name": MINUTES, "description": "Turn a call into written minutes.", "examples": []},
        ],
        "registry_sha256": "0" * 64,
        "strategy": strategy,
        "adapter": adapter,
        "unseen_tasks": [],
        "decision": {"task": decided, "event": "start" if decided else "none", "backend": backend,
                     "fallback_reason": None if backend == "sagemaker" else fallback_reason},
        "primary": {"answer": primary, "probability": confidence, "latency_ms": 41.0},
        "latency_ms": 52.5,
        "sampling": {"probability": 0.1, "uniform": uniform, "reason": "primary" if primary is not None else "fallback"},
        "redaction": [],
        "teacher": None,
    }  # fmt: skip


class _CurrentStdout:
    """Powertools' Logger keeps the sys.stdout of its creation: write to whatever it is now (capsys)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        pass


@dataclass
class CountdownContext(LambdaContext):
    """A Lambda context whose remaining time runs down to `deadline` (time.monotonic()), as Lambda's does."""

    deadline: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class Teacher:
    def __init__(self, s3: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
        from taskrouter.handlers import teacher

        teacher_runtime.reset()
        teacher.logger.registered_handler.setStream(_CurrentStdout())
        self._handler = teacher.handler
        self.s3, self._capsys, self._caplog = s3, capsys, caplog
        self.output = ""
        self.timeout_at = 0.0

    def __call__(self, event: Any, remaining_s: float = 20.0) -> None:
        """One invocation with `remaining_s` left of the function's time (the stage's timeout: 20 s), which
        ends at `self.timeout_at`."""
        teacher_runtime.shadow_teacher()  # the init phase's (handlers/teacher.py, `_start`): not the invocation's time
        teacher_runtime.record_store()
        teacher_runtime.deliveries()
        self.timeout_at = time.monotonic() + remaining_s
        try:
            context = CountdownContext(function_name="taskrouter-teacher", deadline=self.timeout_at)
            assert self._handler(event, context) is None
        finally:
            captured_now = self._capsys.readouterr()
            self.output += captured_now.out + captured_now.err
            # no content in any log line, EMF documents and the caller's logs included
            assert "SECRET-CONTENT" not in self.output + self._caplog.text

    def stored(self, record: dict[str, Any]) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=f"records/date=2026-12-02/hour=07/{record['id']}.json")["Body"].read()

    def teacher_of(self, record: dict[str, Any]) -> dict[str, Any] | None:
        return json.loads(self.stored(record))["teacher"]

    def metrics(self, name: str) -> list[tuple[float, dict[str, str]]]:
        """Each EMF value of `name` with its dimensions (service aside)."""
        found = []
        for line in self.output.splitlines():
            document = json.loads(line) if line.startswith('{"_aws"') else None
            if document and name in document:
                (directive,) = document["_aws"]["CloudWatchMetrics"]
                assert directive["Namespace"] == "TaskRouter"
                names = [n for n in directive["Dimensions"][0] if n != "service"]
                for value in document[name]:
                    found.append((value, {n: document[n] for n in names}))
        return found

    def logs(self, message: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.splitlines() if f'"message":"{message}"' in line]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def teacher_env(
    monkeypatch: pytest.MonkeyPatch, fake_aws_credentials: None, openai_server: OpenAIDouble,
) -> Iterator[pytest.MonkeyPatch]:
    """The teacher function's environment, the teacher on the OpenAI double; no store named yet."""
    for name in ("TASKROUTER_CAPTURE_DIR", "TASKROUTER_CAPTURE_KMS_KEY", "TASKROUTER_OPENAI_SECRET_ARN",
                 "TASKROUTER_OPENAI_MODEL", "TASKROUTER_TEACHER_MODEL", "TASKROUTER_TEACHER_STRATEGY",
                 "TASKROUTER_CAPTURE_BUCKET", "POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_LOGGER_LOG_EVENT",
                 "AWS_ENDPOINT_URL_S3"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "sk-test-teacher",
        "NO_PROXY": "127.0.0.1,localhost",
        "TASKROUTER_TEACHER_TIMEOUT_MS": "3000",
        "POWERTOOLS_SERVICE_NAME": "taskrouter-teacher",
        "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter",
        "POWERTOOLS_LOGGER_LOG_EVENT": "true",  # the handler never logs its event, whatever this says
    }.items():
        monkeypatch.setenv(name, value)
    yield monkeypatch
    teacher_runtime.reset()


@pytest.fixture
def teacher(
    teacher_env: pytest.MonkeyPatch, _moto_server: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> Iterator[Teacher]:
    """Records in the capture bucket of a moto server, reached over HTTP as S3 is."""
    _NO_PROXY.open(urllib.request.Request(f"{_moto_server}/moto-api/reset", method="POST"), timeout=10).read()
    teacher_env.setenv("TASKROUTER_CAPTURE_BUCKET", BUCKET)
    teacher_env.setenv("AWS_ENDPOINT_URL_S3", _moto_server)
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=_moto_server)
    s3.create_bucket(Bucket=BUCKET)
    yield Teacher(s3, capsys, caplog)


# -- agreement ----------------------------------------------------------------------------------------
def test_agreement_is_published_by_adapter_and_strategy_over_uniform_samples_only(teacher, openai_server):
    openai_server.script(openai_server.answer(MINUTES), openai_server.answer(EMAIL), openai_server.answer(None))
    agreeing = captured(adapter="sales-v3")
    disagreeing = captured(adapter=None, strategy="react")  # no adapter: the base model
    drawn_more = captured(decided=None, uniform=False)  # sampled for unseen tasks: labelled, not counted
    for record in (agreeing, disagreeing, drawn_more):
        teacher(record)

    assert teacher.metrics("TeacherAgreement") == [
        (1.0, {"adapter": "sales-v3", "strategy": "zero_shot"}),
        (0.0, {"adapter": "base", "strategy": "react"}),
    ]
    assert teacher.teacher_of(agreeing) == {
        "model": "gpt-4.1-mini", "strategy": "few_shot_cot", "answer": MINUTES, "agrees": True,
        "latency_ms": teacher.teacher_of(agreeing)["latency_ms"], "error": None,
    }  # fmt: skip
    assert teacher.teacher_of(disagreeing)["answer"] == EMAIL and teacher.teacher_of(disagreeing)["agrees"] is False
    assert teacher.teacher_of(drawn_more)["answer"] == "none" and teacher.teacher_of(drawn_more)["agrees"] is True
    # the teacher was asked the router's own prompt: its strategy, the record's tasks and conversation
    sent = openai_server.requests[0].json()
    assert sent["model"] == "gpt-4.1-mini"
    assert set(sent["response_format"]["json_schema"]["schema"]["properties"]) == {"reasoning", "task"}
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["task"]["enum"] == [EMAIL, MINUTES, "none"]
    assert "SECRET-CONTENT-4417" in sent["messages"][1]["content"]
    assert [line["agrees"] for line in teacher.logs("record written")] == [True, False, True]


def test_a_turn_the_fallback_decided_is_stored_with_no_teacher_call(teacher, openai_server):
    record = captured(backend="openai")
    teacher(record)
    assert openai_server.requests == []
    assert teacher.teacher_of(record) is None
    assert teacher.metrics("TeacherAgreement") == teacher.metrics("TeacherFailed") == []


def test_the_teacher_asks_in_the_fallback_s_dialect(teacher, openai_server, monkeypatch):
    monkeypatch.setenv("TASKROUTER_OPENAI_RESPONSE_FORMAT", "json_object")  # llama-cpp-python's server
    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    teacher(record)
    assert openai_server.requests[0].json()["response_format"]["type"] == "json_object"
    assert teacher.teacher_of(record)["agrees"] is True


# -- failures lose the sample only --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        (OpenAIDouble.answer(MINUTES, delay_s=5), "timeout"),
        (OpenAIDouble.server_error(), "error"),
        (OpenAIDouble.rate_limited(), "throttled"),
        (OpenAIDouble.answer("not_a_task_we_hold"), "invalid_output"),
    ],
)
def test_a_teacher_failure_loses_the_sample_and_keeps_the_record(teacher, openai_server, monkeypatch, reply, cause):
    monkeypatch.setenv("TASKROUTER_TEACHER_TIMEOUT_MS", "500")
    openai_server.always(reply)
    record = captured()
    teacher(record)
    label = teacher.teacher_of(record)
    assert (label["answer"], label["agrees"], label["error"]) == (None, None, cause)
    assert teacher.metrics("TeacherFailed") == [(1.0, {"cause": cause})]
    assert teacher.metrics("TeacherAgreement") == []


@pytest.mark.parametrize(
    ("caps", "asked"),
    [
        ({"TASKROUTER_TEACHER_REQUESTS_PER_MINUTE": "1"}, 1),  # the second sample is over the cap
        ({"TASKROUTER_TEACHER_TOKENS_PER_MINUTE": "300"}, 0),  # one prompt is more than 300 tokens
    ],
)
def test_a_sample_over_a_cap_is_capped_without_asking(teacher, openai_server, monkeypatch, caps, asked):
    for name, value in caps.items():
        monkeypatch.setenv(name, value)
    openai_server.always(openai_server.answer(MINUTES))
    first, second = captured(), captured()
    teacher(first)
    teacher(second)
    assert len(openai_server.requests) == asked
    assert teacher.teacher_of(second) == {
        "model": "gpt-4.1-mini", "strategy": "few_shot_cot", "answer": None, "agrees": None, "latency_ms": None,
        "error": "capped",
    }  # fmt: skip
    assert (1.0, {"cause": "capped"}) in teacher.metrics("TeacherFailed")


# -- the stored object ----------------------------------------------------------------------------------
def test_the_object_is_the_record_on_one_line_under_its_date_and_hour(teacher, openai_server):
    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    teacher(record)
    body = teacher.stored(record)
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    stored = json.loads(body)
    assert stored == {**record, "teacher": stored["teacher"]} and stored["teacher"]["agrees"] is True
    head = teacher.s3.head_object(Bucket=BUCKET, Key=f"records/date=2026-12-02/hour=07/{record['id']}.json")
    assert head["ContentType"] == "application/json"


@pytest.fixture
def slow_s3() -> Iterator[SlowS3]:
    double = SlowS3()
    yield double
    double.close()


def _bounded_s3(url: str) -> Any:
    """A real botocore S3 client, as the teacher's runtime builds it, on `url`."""
    import botocore.session
    from botocore.config import Config

    from taskrouter.adapters.deadline_botocore import DeadlineBoundClient

    client = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=url, config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip
    return DeadlineBoundClient(client)


def test_the_kms_key_is_sent_only_when_named(fake_aws_credentials, slow_s3):
    s3 = _bounded_s3(slow_s3.url)
    S3RecordStore(s3, BUCKET).put("records/k.json", b"{}\n", time.monotonic() + 10)
    S3RecordStore(s3, BUCKET, "arn:aws:kms:us-east-1:111122223333:key/k1").put("records/k.json", b"{}\n", time.monotonic() + 10)
    default, named = slow_s3.requests
    assert (default.method, default.path, default.body) == ("PUT", f"/{BUCKET}/records/k.json", b"{}\n")
    assert not [name for name in default.headers if name.startswith("x-amz-server-side-encryption")]  # the bucket's key
    assert (named.headers["x-amz-server-side-encryption"], named.headers["x-amz-server-side-encryption-aws-kms-key-id"]) == (
        "aws:kms", "arn:aws:kms:us-east-1:111122223333:key/k1",
    )


def test_a_failed_write_fails_the_invocation_and_is_counted(teacher, openai_server, monkeypatch):
    """The one error the function raises: Lambda retries none (the teacher would be paid again), its event goes
    to the on-failure destination. The label was known: its metrics are published all the same."""
    from taskrouter.handlers.teacher import RecordNotStored

    monkeypatch.setenv("TASKROUTER_CAPTURE_BUCKET", "no-such-bucket")
    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    with pytest.raises(RecordNotStored, match=rf"record {record['id']} not stored \(error\): .*NoSuchBucket"):
        teacher(record)
    assert teacher.metrics("RecordNotWritten") == [(1.0, {"cause": "error"})]
    assert teacher.metrics("RecordWritten") == [] and teacher.metrics("TeacherAgreement") == [(1.0, {"adapter": "sales-v3", "strategy": "zero_shot"})]


# -- deadlines from the invocation's remaining time ------------------------------------------------------
@pytest.fixture
def teacher_on_slow_s3(teacher_env, slow_s3, capsys, caplog) -> Iterator[tuple[Teacher, SlowS3, list[float]]]:
    """The teacher writing to the slow S3 double; the deadline of each S3 call it makes, as it makes it."""
    from taskrouter.adapters.deadline_botocore import DeadlineBoundClient

    teacher_env.setenv("TASKROUTER_CAPTURE_BUCKET", BUCKET)
    teacher_env.setenv("AWS_ENDPOINT_URL_S3", slow_s3.url)
    deadlines: list[float] = []
    call = DeadlineBoundClient.call

    def recorded(self: Any, operation: str, ends_at: float, **params: Any) -> dict[str, Any]:
        deadlines.append(ends_at)
        return call(self, operation, ends_at, **params)

    teacher_env.setattr(DeadlineBoundClient, "call", recorded)
    yield Teacher(None, capsys, caplog), slow_s3, deadlines


@pytest.mark.parametrize("reply", ["stall", "trickle"])
def test_a_slow_s3_ends_as_a_counted_failure_before_the_function_times_out(teacher_on_slow_s3, openai_server, reply):
    """A stalled answer, or one trickled a byte a tenth of a second (no per-read timeout ever fires), ends
    by the deadline the handler took from the invocation's remaining time, not by the function's timeout
    (which Lambda would count as the function's error with no word of the write)."""
    from taskrouter.adapters.teacher_deadlines import RETURN_S
    from taskrouter.handlers.teacher import RecordNotStored

    teacher, s3, deadlines = teacher_on_slow_s3
    s3.default = reply
    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    with pytest.raises(RecordNotStored, match=rf"record {record['id']} not stored \(deadline\): DeadlineExceeded"):
        teacher(record, remaining_s=3.0)
    (ends_at,) = deadlines  # one call, its tries bounded together
    # taken from the context's remaining time, with room left to return before the function's timeout
    assert teacher.timeout_at - 3.0 < ends_at <= teacher.timeout_at - RETURN_S
    assert [(r.method, r.path) for r in s3.requests][:1] == [("PUT", f"/{BUCKET}/records/date=2026-12-02/hour=07/{record['id']}.json")]
    assert teacher.metrics("RecordNotWritten") == [(1.0, {"cause": "deadline"})]
    assert teacher.metrics("TeacherAgreement") == [(1.0, {"adapter": "sales-v3", "strategy": "zero_shot"})]


def test_a_transient_s3_error_is_tried_again_within_the_deadline(teacher_on_slow_s3, openai_server):
    teacher, s3, deadlines = teacher_on_slow_s3
    s3.script("internal_error")  # then "ok"
    openai_server.always(openai_server.answer(MINUTES))
    teacher(captured())
    assert len(s3.requests) == 2 and len(deadlines) == 1  # two tries of one call, under one deadline
    assert teacher.metrics("RecordWritten") == [(1.0, {})]


def test_s3_throttling_every_try_fails_the_write_after_its_tries(teacher_on_slow_s3, openai_server):
    from taskrouter.handlers.teacher import RecordNotStored

    teacher, s3, _ = teacher_on_slow_s3
    s3.default = "slow_down"
    openai_server.always(openai_server.answer(MINUTES))
    with pytest.raises(RecordNotStored, match=r"not stored \(error\): .*SlowDown"):
        teacher(captured())
    assert len(s3.requests) == 3  # DeadlineBoundClient's tries; botocore itself makes one a call


@pytest.mark.parametrize(("remaining_s", "asked"), [(3.0, True), (2.0, False)])
def test_the_teacher_gets_what_the_invocation_can_give_it(teacher, openai_server, monkeypatch, remaining_s, asked):
    """A teacher timeout of a minute, an OpenAI that answers in 5 s, and an invocation with 3 s left: the
    teacher gets 3 - 0.5 (return) - 2 (the write) = 0.5 s and the sample is stored `timeout`; with 2 s
    left it gets nothing and is not asked. The record is written either way."""
    monkeypatch.setenv("TASKROUTER_TEACHER_TIMEOUT_MS", "60000")
    openai_server.always(openai_server.answer(MINUTES, delay_s=5))
    record = captured()
    teacher(record, remaining_s=remaining_s)
    label = teacher.teacher_of(record)
    assert (label["answer"], label["error"]) == (None, "timeout")
    assert (label["latency_ms"] is not None, len(openai_server.requests) == 1) == (asked, asked)
    assert teacher.metrics("TeacherFailed") == [(1.0, {"cause": "timeout"})]
    from taskrouter.adapters.teacher_deadlines import RETURN_S, WRITE_S

    assert (remaining_s - RETURN_S - WRITE_S > 0) == asked  # the shares the arithmetic above names


@pytest.mark.parametrize(("remaining_s", "asked"), [(4.0, True), (3.0, False)])
def test_checking_deliveries_keeps_a_second_for_the_last_call(teacher, deliveries, openai_server, monkeypatch, remaining_s, asked):
    """With the deliveries table, the teacher gets 4 - 0.5 (return) - 1 (the deliveries' last write) - 2 (the
    record's write) = 0.5 s of an invocation with 4 s left, nothing of one with 3 s left; the turn is
    completed in the table either way."""
    from taskrouter.adapters.teacher_deadlines import RETURN_S, WRITE_S
    from taskrouter.adapters.teacher_deliveries import DELIVERY_CALL_S

    monkeypatch.setenv("TASKROUTER_TEACHER_TIMEOUT_MS", "60000")
    openai_server.always(openai_server.answer(MINUTES, delay_s=5))
    record = captured()
    teacher(record, remaining_s=remaining_s)
    label = teacher.teacher_of(record)
    assert (label["error"], len(openai_server.requests) == 1) == ("timeout", asked)
    assert (remaining_s - RETURN_S - DELIVERY_CALL_S - WRITE_S > 0) == asked
    assert _item(deliveries, record)["status"] == {"S": "COMPLETED"}


# -- a stage that stores no records ---------------------------------------------------------------------
def test_a_stage_that_stores_nothing_labels_and_publishes_only(teacher_env, openai_server, capsys, caplog):
    openai_server.always(openai_server.answer(MINUTES))
    teacher = Teacher(None, capsys, caplog)  # no bucket, no folder: nothing to write to
    teacher(captured())
    assert teacher.metrics("TeacherAgreement") == [(1.0, {"adapter": "sales-v3", "strategy": "zero_shot"})]
    assert teacher.metrics("RecordWritten") == teacher.metrics("RecordNotWritten") == []
    (labelled,) = teacher.logs("record labelled")
    assert labelled["agrees"] is True and not teacher.logs("record written")


# -- malformed events ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "event",
    [
        [SECRET],
        {"conversation": [{"role": "user", "content": SECRET}]},
        {**captured(), "id": f"../../{SECRET}"},
        {**captured(), "time": SECRET},
        {**captured(), "decision": {"task": SECRET, "backend": SECRET}},
        {**captured(), "tasks": [{"name": SECRET, "description": SECRET}]},
    ],
)
def test_a_malformed_event_is_dropped_and_logged_without_its_content(teacher, openai_server, event):
    teacher(event)  # returns: an event that raised would be retried by Lambda, to fail again
    assert openai_server.requests == []
    assert teacher.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    (dropped,) = teacher.logs("record dropped")
    assert dropped["reason"] and dropped["level"] == "WARNING"
    assert teacher.metrics("RecordRejected") == [(1.0, {})]


# -- what the teacher judges: the primary's own answer, kept or escalated ---------------------------------
def test_an_escalated_answer_is_labelled_and_judged_against_the_primarys_own_answer(teacher, openai_server):
    """A turn the primary answered under its threshold, decided by the fallback (`low_confidence`): drawn at the
    primary's uniform share, it is the model's own answer the teacher judges, not the fallback's."""
    openai_server.always(openai_server.answer(MINUTES))
    escalated = captured(decided=EMAIL, backend="openai", primary=MINUTES, confidence=0.42, fallback_reason="low_confidence")
    teacher(escalated)
    assert len(openai_server.requests) == 1
    label = teacher.teacher_of(escalated)
    assert (label["answer"], label["agrees"]) == (MINUTES, True)  # the primary's MINUTES, not the decision's EMAIL
    dimensions = {"adapter": "sales-v3", "strategy": "zero_shot"}
    assert teacher.metrics("TeacherAgreement") == [(1.0, dimensions)]  # the model's own agreement
    assert teacher.metrics("TeacherAgreementKept") == []  # users got the fallback's answer
    assert teacher.metrics("TeacherAgreementByConfidence") == [(1.0, {**dimensions, "band": "0.4-0.5"})]
    (written,) = teacher.logs("record written")
    assert (written["backend"], written["escalated"], written["agrees"]) == ("openai", True, True)


def test_kept_answers_count_in_the_kept_agreement_and_each_confidence_in_its_band(teacher, openai_server):
    openai_server.script(*(openai_server.answer(EMAIL) for _ in range(4)))
    sure_but_wrong = captured(confidence=0.93)  # the primary kept MINUTES; the teacher says EMAIL
    no_confidence = captured(decided=EMAIL)  # an engine without logprobs: no band
    at_a_bound = captured(decided=EMAIL, confidence=0.1, strategy="react")
    drawn_more = captured(confidence=0.5, uniform=False)  # drawn for unseen tasks: labelled, never counted
    for record in (sure_but_wrong, no_confidence, at_a_bound, drawn_more):
        teacher(record)
    zero_shot, react = {"adapter": "sales-v3", "strategy": "zero_shot"}, {"adapter": "sales-v3", "strategy": "react"}
    assert teacher.metrics("TeacherAgreement") == teacher.metrics("TeacherAgreementKept") == [
        (0.0, zero_shot), (1.0, zero_shot), (1.0, react)]
    assert teacher.metrics("TeacherAgreementByConfidence") == [
        (0.0, {**zero_shot, "band": "0.9-1.0"}), (1.0, {**react, "band": "0.1-0.2"})]
    assert teacher.teacher_of(drawn_more)["agrees"] is False  # labelled and stored all the same


def test_a_record_without_the_primarys_own_answer_is_judged_against_the_decision(teacher, openai_server):
    """A record that predates the primary's part, or lacks it: the decision was the primary's when it decided."""
    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    del record["primary"]
    teacher(record)
    assert teacher.teacher_of(record)["agrees"] is True
    assert teacher.metrics("TeacherAgreementByConfidence") == []  # no confidence without it


@pytest.mark.parametrize("confidence", [1.5, -0.1, True, "0.9"])
def test_a_confidence_that_is_no_probability_drops_the_record(teacher, openai_server, confidence):
    """It would name a band of no metric: the record is dropped, as any field the teacher reads and cannot use."""
    record = captured(confidence=0.5)
    record["primary"]["probability"] = confidence
    teacher(record)
    assert openai_server.requests == []
    (dropped,) = teacher.logs("record dropped")
    assert "primary.probability" in dropped["reason"]


# -- deliveries: Lambda may deliver an event more than once ---------------------------------------------
DELIVERIES = "taskrouter-test-teacher-deliveries"


@pytest.fixture
def deliveries(teacher: Teacher, teacher_env: pytest.MonkeyPatch, _moto_server: str) -> Any:
    """The deliveries table in the moto server, as infra/capture.py makes it (key `id`, TTL `expiration`)."""
    teacher_env.setenv("TASKROUTER_TEACHER_DELIVERIES_TABLE", DELIVERIES)
    teacher_env.setenv("AWS_ENDPOINT_URL_DYNAMODB", _moto_server)
    dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=_moto_server)
    dynamodb.create_table(
        TableName=DELIVERIES, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
    )  # fmt: skip
    dynamodb.update_time_to_live(TableName=DELIVERIES, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"})
    return dynamodb


def _item(dynamodb: Any, record: dict[str, Any]) -> dict[str, Any] | None:
    """The table's item of a record: Powertools keys it `<key prefix>#<md5 of the JSON of the id>`."""
    import hashlib

    key = "record#" + hashlib.md5(json.dumps(record["id"]).encode()).hexdigest()
    return dynamodb.get_item(TableName=DELIVERIES, Key={"id": {"S": key}}, ConsistentRead=True).get("Item")


def test_a_record_delivered_twice_is_labelled_counted_and_stored_once(teacher, deliveries, openai_server):
    from taskrouter.adapters.teacher_deliveries import DELIVERIES_EXPIRE_AFTER_S

    openai_server.always(openai_server.answer(MINUTES))
    record = captured(confidence=0.8)
    before = time.time()
    teacher(record)
    teacher(copy_of(record))  # Lambda's second delivery of the same event
    assert len(openai_server.requests) == 1  # the teacher asked (and paid) once
    assert teacher.metrics("TeacherAgreement") == [(1.0, {"adapter": "sales-v3", "strategy": "zero_shot"})]
    assert len(teacher.metrics("TeacherAgreementByConfidence")) == len(teacher.metrics("TeacherAgreementKept")) == 1
    assert teacher.metrics("RecordWritten") == [(1.0, {})] and teacher.metrics("RecordDuplicate") == [(1.0, {})]
    (skipped,) = teacher.logs("record skipped: delivered before")
    assert skipped["record_id"] == record["id"]
    item = _item(deliveries, record)
    assert item["status"] == {"S": "COMPLETED"}
    assert before + DELIVERIES_EXPIRE_AFTER_S - 5 <= int(item["expiration"]["N"]) <= time.time() + DELIVERIES_EXPIRE_AFTER_S
    # no content: the id's hash, and the handler's response, which is nothing
    assert set(item) == {"id", "status", "expiration", "in_progress_expiration", "data"} and item["data"] == {"S": "null"}


def copy_of(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(record))


def test_another_record_is_not_taken_for_a_duplicate(teacher, deliveries, openai_server):
    openai_server.always(openai_server.answer(MINUTES))
    teacher(captured())
    teacher(captured())
    assert len(openai_server.requests) == 2 and teacher.metrics("RecordDuplicate") == []


def test_a_delivery_whose_invocation_failed_is_handled_when_it_comes_again(teacher, deliveries, openai_server, monkeypatch):
    """A failed invocation deletes its item: the event, sent again from the on-failure destination, is labelled."""
    from taskrouter.handlers.teacher import RecordNotStored

    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    monkeypatch.setenv("TASKROUTER_CAPTURE_BUCKET", "no-such-bucket")
    with pytest.raises(RecordNotStored):
        teacher(record)
    assert _item(deliveries, record) is None
    monkeypatch.setenv("TASKROUTER_CAPTURE_BUCKET", BUCKET)
    teacher_runtime.reset()
    teacher(copy_of(record))
    assert teacher.teacher_of(record)["agrees"] is True and len(openai_server.requests) == 2
    assert _item(deliveries, record)["status"] == {"S": "COMPLETED"}


def test_a_deliveries_table_that_fails_loses_no_sample(teacher, deliveries, openai_server):
    """The table unusable (here: gone): each turn is labelled, counted and stored all the same, unchecked."""
    deliveries.delete_table(TableName=DELIVERIES)
    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    teacher(record)
    assert teacher.teacher_of(record)["agrees"] is True
    assert teacher.metrics("TeacherAgreement") == [(1.0, {"adapter": "sales-v3", "strategy": "zero_shot"})]
    assert teacher.metrics("DeliveryUnchecked") == [(1.0, {})]
    (unchecked,) = teacher.logs("record handled unchecked: the deliveries table failed")
    assert unchecked["record_id"] == record["id"] and unchecked["level"] == "WARNING"


def test_a_deliveries_table_that_fails_after_the_turn_was_handled_counts_it_once(teacher, deliveries, openai_server, monkeypatch):
    """The "in progress" item written, the turn labelled, then the table gone: the completion cannot be written.
    The turn was handled, once: nothing raised, nothing handled again, the invocation counted unchecked."""
    from taskrouter.adapters.shadow_teacher import ShadowTeacher

    label = ShadowTeacher.label

    def label_then_lose_the_table(self: ShadowTeacher, *args: Any, **kwargs: Any) -> Any:
        labelled = label(self, *args, **kwargs)
        deliveries.delete_table(TableName=DELIVERIES)
        return labelled

    monkeypatch.setattr(ShadowTeacher, "label", label_then_lose_the_table)
    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    teacher(record)
    assert len(openai_server.requests) == 1 and teacher.teacher_of(record)["agrees"] is True
    assert teacher.metrics("TeacherAgreement") == [(1.0, {"adapter": "sales-v3", "strategy": "zero_shot"})]
    assert teacher.metrics("RecordWritten") == teacher.metrics("DeliveryUnchecked") == [(1.0, {})]


def test_a_deliveries_table_that_never_answers_costs_a_bounded_second(teacher, deliveries, openai_server, slow_s3, monkeypatch):
    """A DynamoDB endpoint that takes the request and answers nothing: each call ends by its bound
    (DELIVERY_CALL_S), and the turn is handled, unchecked, within the invocation's time."""
    from taskrouter.adapters.teacher_deadlines import RETURN_S
    from taskrouter.adapters.teacher_deliveries import DELIVERY_CALL_S

    slow_s3.default = "stall"  # accepts any request, answers nothing
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", slow_s3.url)
    teacher_runtime.reset()
    openai_server.always(openai_server.answer(MINUTES))
    record = captured()
    started = time.monotonic()
    teacher(record, remaining_s=20.0)
    assert time.monotonic() - started < teacher.timeout_at - started - RETURN_S
    assert len(slow_s3.requests) == 1  # the in-progress write, cut at its bound; the turn handled after it
    assert slow_s3.requests[0].headers["x-amz-target"] == "DynamoDB_20120810.PutItem"
    assert teacher.teacher_of(record)["agrees"] is True and teacher.metrics("DeliveryUnchecked") == [(1.0, {})]
    assert DELIVERY_CALL_S <= 1.0
