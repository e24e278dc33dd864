"""The teacher function's entry (`handlers/teacher.py`) under any event (docs/capture.md, "The teacher
function"): it returns, never raises, whatever the event holds; a malformed one is dropped, a record is
asked of the teacher (the OpenAI double) and stored under its key. An invocation that raised would be
retried by Lambda, to fail again, and pay the teacher again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

from taskrouter.composition import teacher_runtime
from taskrouter.adapters.captured_record import InvalidRecord, read_record
from taskrouter.adapters.record_store import record_key

from ..unit.test_captured_record import EVENTS, valid_record
from .apigw import LambdaContext
from .servers import OpenAIDouble


@pytest.fixture
def teacher_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIDouble) -> Iterator[tuple[Any, Path]]:
    """The handler with its records under a folder (as `make local` runs it) and the teacher on the double."""
    for name in ("TASKROUTER_CAPTURE_BUCKET", "TASKROUTER_OPENAI_SECRET_ARN", "TASKROUTER_TEACHER_STRATEGY"):
        monkeypatch.delenv(name, raising=False)
    records = tmp_path / "capture"
    for name, value in {
        "TASKROUTER_CAPTURE_DIR": str(records), "OPENAI_BASE_URL": openai_server.base_url, "OPENAI_API_KEY": "sk-test",
        "NO_PROXY": "127.0.0.1,localhost", "TASKROUTER_TEACHER_REQUESTS_PER_MINUTE": "100000",
        "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter", "POWERTOOLS_SERVICE_NAME": "taskrouter-teacher",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    openai_server.always(openai_server.answer(None))  # "none": a choice every prompt offers
    from taskrouter.handlers import teacher

    teacher_runtime.reset()
    yield teacher.handler, records
    teacher_runtime.reset()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=EVENTS)
@example(event={**valid_record(1), "time": "0001-01-01T00:30:00+01:00"})  # raised OverflowError: Lambda retried it
@example(event={**valid_record(), "conversation": [{"role": "user", "content": "a lone \ud800 surrogate"}]})
@example(event={**valid_record(), "latency_ms": float("nan")})
@example(event={**valid_record(), "adapter": " "})
def test_the_teacher_function_returns_whatever_the_event(teacher_entry, event):
    handler, records = teacher_entry
    assert handler(event, LambdaContext(function_name="taskrouter-teacher")) is None
    try:
        turn = read_record(event)
    except InvalidRecord:
        return
    stored = json.loads((records / record_key(turn.id, turn.time)).read_text(encoding="utf-8"))
    assert stored["id"] == turn.id and "teacher" in stored
