"""The teacher function: a captured turn in (an asynchronous invocation from the router, docs/capture.md),
the teacher's label added, the agreement metrics over uniform samples, the completed record stored where
the stage stores records; a record id Lambda delivers again is skipped (teacher_deliveries.py).

Every call ends before the function's timeout (teacher_deadlines.py): a slow OpenAI is a `timeout` label,
a slow or failing S3 a counted `RecordNotWritten` and the one error raised. Lambda retries no failed
invocation of this function (it would pay the teacher again); the stage's on-failure destination keeps
its event. A malformed event is logged, counted and dropped. Metrics are published as soon as the label
is known, stored or not. Nothing of the conversation or the tasks reaches a log line or a metric.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit

from taskrouter.composition import teacher_runtime
from taskrouter.adapters.captured_record import CapturedTurn, InvalidRecord, read_record
from taskrouter.adapters.deadline_botocore import DeadlineExceeded
from taskrouter.adapters.record_store import RecordStore, record_body, record_key
from taskrouter.adapters.shadow_teacher import TeacherLabel
from taskrouter.adapters.teacher_deadlines import TeacherDeadlines
from taskrouter.adapters.teacher_deliveries import Delivery
from taskrouter.adapters.teacher_metrics import (
    BAND_DIMENSION,
    TEACHER_AGREEMENT,
    TEACHER_AGREEMENT_BY_CONFIDENCE,
    TEACHER_AGREEMENT_KEPT,
    confidence_band,
)

# Service and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE.
logger = Logger()
metrics = Metrics()


def _start() -> None:
    """The init phase builds the teacher (the `openai` client, its key), the store and the deliveries'
    table client before any event."""
    try:
        teacher_runtime.shadow_teacher()
        teacher_runtime.record_store()
        teacher_runtime.deliveries()
    except Exception:
        logger.exception("teacher not built at start-up")


_start()


class RecordNotStored(Exception):
    """The record's write failed or missed its deadline: the invocation fails, and its event goes to the
    function's on-failure destination (the stage's asynchronous settings, infra/capture.py)."""


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the event is a conversation.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handler(event: Any, context: Any) -> None:
    started = time.monotonic()
    try:
        turn = read_record(event)
    except InvalidRecord as error:
        logger.warning("record dropped", extra={"reason": str(error)})
        metrics.add_metric(name="RecordRejected", unit=MetricUnit.Count, value=1)
        return
    store = teacher_runtime.record_store()
    deliveries = teacher_runtime.deliveries()
    deadlines = TeacherDeadlines.sharing(
        context.get_remaining_time_in_millis(), store is not None, started, checks_deliveries=deliveries is not None
    )
    if deliveries is None:
        _handle(turn, store, deadlines)
        return
    delivery = deliveries.once(turn.id, context, deadlines.calls_end_at, lambda: _handle(turn, store, deadlines))
    if delivery is Delivery.DUPLICATE:  # Lambda delivered it again: labelled, counted and stored once
        logger.info("record skipped: delivered before", extra={"record_id": turn.id})
        metrics.add_metric(name="RecordDuplicate", unit=MetricUnit.Count, value=1)
    elif delivery is Delivery.UNCHECKED:
        logger.warning("record handled unchecked: the deliveries table failed", extra={"record_id": turn.id})
        metrics.add_metric(name="DeliveryUnchecked", unit=MetricUnit.Count, value=1)


def _handle(turn: CapturedTurn, store: RecordStore | None, deadlines: TeacherDeadlines) -> None:
    """One delivery: the label, its metrics, the record stored where the stage stores them."""
    label = teacher_runtime.shadow_teacher().label(turn, within_s=deadlines.teacher_ends_at - time.monotonic())
    _publish(turn, label)
    if store is not None:
        assert deadlines.write_ends_at is not None  # a store always has its deadline
        _store(store, turn, label, deadlines.write_ends_at)
    logger.info(
        "record written" if store is not None else "record labelled",
        extra={
            "record_id": turn.id,
            "backend": "sagemaker" if turn.decided_by_primary else "openai",
            "escalated": turn.escalated,
            "uniform": turn.uniform,
            "adapter": turn.adapter,
            "strategy": turn.strategy.value,
            "agrees": None if label is None else label.agrees,
            "teacher_error": None if label is None else label.error,
            "teacher_latency_ms": None if label is None else label.latency_ms,
        },
    )


def _store(store: RecordStore, turn: CapturedTurn, label: TeacherLabel | None, ends_at: float) -> None:
    record = turn.completed(None if label is None else label.as_record_field())
    try:
        store.put(record_key(turn.id, turn.time), record_body(record), ends_at)
    except Exception as error:
        cause = "deadline" if isinstance(error, DeadlineExceeded) else "error"
        with single_metric(name="RecordNotWritten", unit=MetricUnit.Count, value=1) as metric:
            metric.add_dimension(name="cause", value=cause)
        # The message names the record and the store's error (an AWS error code, a deadline), no content.
        raise RecordNotStored(f"record {turn.id} not stored ({cause}): {type(error).__name__}: {error}") from error
    metrics.add_metric(name="RecordWritten", unit=MetricUnit.Count, value=1)


def _publish(turn: CapturedTurn, label: TeacherLabel | None) -> None:
    """`TeacherFailed` by cause for every failure; for a uniform sample the teacher answered, 1/0 by adapter
    and strategy: `TeacherAgreement` (every primary answer), `TeacherAgreementKept` (those the primary
    kept) and `TeacherAgreementByConfidence` by band (those with a confidence): teacher_metrics.py. A
    sample drawn more often, as for unseen tasks, would bias them."""
    if label is None:
        return
    if label.error is not None:
        with single_metric(name="TeacherFailed", unit=MetricUnit.Count, value=1) as metric:
            metric.add_dimension(name="cause", value=label.error)
        return
    if not turn.uniform:
        return
    agrees = int(bool(label.agrees))
    published: list[tuple[str, dict[str, str]]] = [(TEACHER_AGREEMENT, {})]
    if not turn.escalated:
        published.append((TEACHER_AGREEMENT_KEPT, {}))
    if turn.confidence is not None:
        published.append((TEACHER_AGREEMENT_BY_CONFIDENCE, {BAND_DIMENSION: confidence_band(turn.confidence)}))
    for name, dimensions in published:
        with single_metric(name=name, unit=MetricUnit.Count, value=agrees) as metric:
            metric.add_dimension(name="adapter", value=turn.adapter)
            metric.add_dimension(name="strategy", value=turn.strategy.value)
            for dimension, value in dimensions.items():
                metric.add_dimension(name=dimension, value=value)
