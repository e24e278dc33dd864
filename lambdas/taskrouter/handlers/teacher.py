"""The teacher function: a captured turn in (an asynchronous invocation from the router, docs/capture.md),
the teacher's label added, the completed record stored; `TeacherAgreement` over uniform samples.

Lambda retries an asynchronous invocation that raises, so only a failed write raises (the retry then
writes it); a malformed event is logged, counted and dropped, and a teacher failure is part of the
record. Metrics are published once the record is stored, so that a retried write counts nothing twice.
Nothing of the conversation or the tasks reaches a log line or a metric.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit

from taskrouter.adapters import teacher_runtime
from taskrouter.adapters.captured_record import CapturedTurn, InvalidRecord, read_record
from taskrouter.adapters.record_store import record_body, record_key
from taskrouter.adapters.shadow_teacher import TeacherLabel

# Service and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE.
logger = Logger()
metrics = Metrics()


def _start() -> None:
    """The init phase builds the teacher (the `openai` client, its key) and the store before any event."""
    try:
        teacher_runtime.shadow_teacher()
        teacher_runtime.record_store()
    except Exception:
        logger.exception("teacher not built at start-up")


_start()


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the event is a conversation.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handler(event: Any, context: object) -> None:
    try:
        turn = read_record(event)
    except InvalidRecord as error:
        logger.warning("record dropped", extra={"reason": str(error)})
        metrics.add_metric(name="RecordRejected", unit=MetricUnit.Count, value=1)
        return
    label = teacher_runtime.shadow_teacher().label(turn)
    record = turn.completed(None if label is None else label.as_record_field())
    teacher_runtime.record_store().put(record_key(turn.id, turn.time), record_body(record))
    metrics.add_metric(name="RecordWritten", unit=MetricUnit.Count, value=1)
    _publish(turn, label)
    logger.info(
        "record written",
        extra={
            "record_id": turn.id,
            "backend": "sagemaker" if turn.decided_by_primary else "openai",
            "uniform": turn.uniform,
            "adapter": turn.adapter,
            "strategy": turn.strategy.value,
            "agrees": None if label is None else label.agrees,
            "teacher_error": None if label is None else label.error,
            "teacher_latency_ms": None if label is None else label.latency_ms,
        },
    )


def _publish(turn: CapturedTurn, label: TeacherLabel | None) -> None:
    """`TeacherFailed` by cause for every failure; `TeacherAgreement` (1/0) by adapter and strategy for a
    uniform sample the teacher answered (a sample drawn more often, as for unseen tasks, would bias it)."""
    if label is None:
        return
    if label.error is not None:
        with single_metric(name="TeacherFailed", unit=MetricUnit.Count, value=1) as metric:
            metric.add_dimension(name="cause", value=label.error)
    elif turn.uniform:
        with single_metric(name="TeacherAgreement", unit=MetricUnit.Count, value=int(bool(label.agrees))) as metric:
            metric.add_dimension(name="adapter", value=turn.adapter)
            metric.add_dimension(name="strategy", value=turn.strategy.value)
