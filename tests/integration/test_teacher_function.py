"""The teacher function end to end (docs/capture.md): a captured turn in, the teacher (the OpenAI double)
asked, the completed record in the capture bucket (moto), `TeacherAgreement` and `TeacherFailed` as
EMF documents; failures lose a sample, never the record; no content in any log line."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from taskrouter.adapters import teacher_runtime
from taskrouter.adapters.record_store import S3RecordStore

from .apigw import LambdaContext
from .servers import OpenAIDouble

BUCKET = "taskrouter-test-capture"
SECRET = "Dana's number is SECRET-CONTENT-4417"  # in every conversation: must never reach a log line
MINUTES, EMAIL = "prepare_meeting_minutes", "follow_up_email"


def captured(
    *, decided: str | None = MINUTES, backend: str = "sagemaker", uniform: bool = True, adapter: str | None = "sales-v3",
    strategy: str = "zero_shot",
) -> dict[str, Any]:
    """A record as the router sends it (teacher null)."""
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
                     "fallback_reason": None if backend == "sagemaker" else "timeout"},
        "primary": {"answer": decided or "none", "probability": None, "latency_ms": 41.0},
        "latency_ms": 52.5,
        "sampling": {"probability": 0.1, "uniform": uniform, "reason": "primary" if backend == "sagemaker" else "fallback"},
        "redaction": [],
        "teacher": None,
    }  # fmt: skip


class _CurrentStdout:
    """Powertools' Logger keeps the sys.stdout of its creation: write to whatever it is now (capsys)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        pass


class Teacher:
    def __init__(self, s3: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
        from taskrouter.handlers import teacher

        teacher_runtime.reset()
        teacher.logger.registered_handler.setStream(_CurrentStdout())
        self._handler = teacher.handler
        self.s3, self._capsys, self._caplog = s3, capsys, caplog
        self.output = ""

    def __call__(self, event: Any) -> None:
        try:
            assert self._handler(event, LambdaContext()) is None
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


@pytest.fixture
def teacher(
    monkeypatch: pytest.MonkeyPatch, fake_aws_credentials: None, openai_server: OpenAIDouble,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> Iterator[Teacher]:
    for name in ("TASKROUTER_CAPTURE_DIR", "TASKROUTER_CAPTURE_KMS_KEY", "TASKROUTER_OPENAI_SECRET_ARN",
                 "TASKROUTER_OPENAI_MODEL", "TASKROUTER_TEACHER_MODEL", "TASKROUTER_TEACHER_STRATEGY",
                 "POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_LOGGER_LOG_EVENT", "AWS_ENDPOINT_URL_S3"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "sk-test-teacher",
        "NO_PROXY": "127.0.0.1,localhost",
        "TASKROUTER_CAPTURE_BUCKET": BUCKET,
        "TASKROUTER_TEACHER_TIMEOUT_MS": "3000",
        "POWERTOOLS_SERVICE_NAME": "taskrouter-teacher",
        "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter",
        "POWERTOOLS_LOGGER_LOG_EVENT": "true",  # the handler never logs its event, whatever this says
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield Teacher(s3, capsys, caplog)
    teacher_runtime.reset()


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


def test_the_kms_key_is_sent_only_when_named():
    class Recording:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def put_object(self, **kwargs: Any) -> None:
            self.calls.append(kwargs)

    s3 = Recording()
    S3RecordStore(s3, BUCKET).put("records/k.json", b"{}\n")
    S3RecordStore(s3, BUCKET, "arn:aws:kms:us-east-1:111122223333:key/k1").put("records/k.json", b"{}\n")
    assert "ServerSideEncryption" not in s3.calls[0] and "SSEKMSKeyId" not in s3.calls[0]  # the bucket's default key
    assert (s3.calls[1]["ServerSideEncryption"], s3.calls[1]["SSEKMSKeyId"]) == (
        "aws:kms", "arn:aws:kms:us-east-1:111122223333:key/k1",
    )


def test_a_failed_write_raises_for_lambda_to_retry_and_counts_nothing(teacher, openai_server, monkeypatch):
    monkeypatch.setenv("TASKROUTER_CAPTURE_BUCKET", "no-such-bucket")
    openai_server.always(openai_server.answer(MINUTES))
    with pytest.raises(Exception, match="NoSuchBucket"):
        teacher(captured())
    assert teacher.metrics("TeacherAgreement") == teacher.metrics("RecordWritten") == []


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
