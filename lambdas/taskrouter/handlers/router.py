"""`POST /route` behind API Gateway (REST, proxy integration).

The proxy event is read directly rather than through Powertools' event resolver: that resolver
costs ~50 ms of import on every cold start, for the one route this function serves.

A sampled turn is sent to the teacher function before the handler returns (docs/capture.md): once it
has returned, Lambda freezes the environment, and no thread left running can be relied on to send.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from taskrouter.composition import router_runtime
from taskrouter.adapters.settings import DEFAULT_RETRY_AFTER_S
from taskrouter.core import capture
from taskrouter.core.errors import ApiError, NoBackendAvailable, NotFound
from taskrouter.core.request import RouteRequest, decode_body, parse_route_request
from taskrouter.core.router import Decision, primary_failed

# Service and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE.
# Log lines carry the request id and decision fields, never the conversation.
logger = Logger()
metrics = Metrics()


def _start() -> None:
    """The init phase builds the router (clients, `openai`, the fallback's key) before any request.
    A broken environment is logged here, then answered per request (a 503 counted as unexpected)."""
    try:
        router_runtime.router()
    except Exception:
        logger.exception("router not built at start-up")
    try:
        router_runtime.capture()  # the sender, its dry run and the kill switch's first read
    except Exception:
        logger.exception("capture not built at start-up")


_start()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    try:
        if event.get("httpMethod") != "POST" or event.get("resource", event.get("path")) != "/route":
            raise NotFound("no such resource")
        return _route(event)
    except ApiError as error:
        return _refused(error)
    except Exception:
        # The contract allows no 500: an unforeseen failure (a bug, a bad environment) is answered as
        # a retryable 503, and counted apart from backend outages so that it alarms on its own.
        logger.exception("unexpected failure")
        metrics.add_metric(name="UnexpectedError", unit=MetricUnit.Count, value=1)
        error = NoBackendAvailable("the router failed unexpectedly", retry_after_s=DEFAULT_RETRY_AFTER_S)
        return _response(error.status, error.body(), error.headers)


def _route(event: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    request = parse_route_request(decode_body(event.get("body"), is_base64=bool(event.get("isBase64Encoded"))))
    decision = router_runtime.router().route(request)
    _capture(request, decision, decided_ms=round((time.perf_counter() - started) * 1000, 3))
    latency_ms = round((time.perf_counter() - started) * 1000, 3)  # a capture's send included: callers wait for it
    body = {
        "task": decision.task,
        "event": decision.event,
        "backend": decision.backend,
        "fallback_reason": decision.fallback_reason,
        "confidence": decision.primary.confidence,
        "latency_ms": latency_ms,
        "request_id": (event.get("requestContext") or {}).get("requestId"),
    }
    if decision.ignored_tasks:
        body["ignored_tasks"] = list(decision.ignored_tasks)
    _record(decision, latency_ms)
    logger.info(
        "routed",
        extra={
            "event": decision.event,
            "backend": decision.backend,
            "fallback_reason": decision.fallback_reason,
            "fallback_detail": decision.fallback_detail,
            "strategy": decision.strategy.value,
            "latency_ms": latency_ms,
            # the registry outgrew the catalogue budget: what the prompt left out (docs/api.md)
            "catalogue_cut": decision.catalogue_cut,
            # the primary's own answer (a task name, never content) and its confidence, escalated or not
            "primary_answer": decision.primary.answer,
            "confidence": decision.primary.confidence,
            "threshold": decision.threshold,
            "threshold_registry_differs": decision.threshold_registry_differs,
        },
    )
    return _response(200, body)


def _record(decision: Decision, latency_ms: float) -> None:
    """EMF metrics of one decision: rates by service; latency by strategy (each has its own budget);
    counts by backend, event and fallback reason (each dimension set is its own EMF document).
    `Escalated` (1/0 over the primary's answers held to a threshold, by adapter and strategy) is the
    share the stage planned for; `Fallback` counts escalations too (the fallback is paid for them)."""
    metrics.add_metric(name="Fallback", unit=MetricUnit.Count, value=int(decision.fallback_reason is not None))
    metrics.add_metric(
        name="InvalidOutput", unit=MetricUnit.Count, value=int(decision.fallback_reason == "invalid_output")
    )
    failed = primary_failed(decision.fallback_reason)
    if failed is not None:  # the primary's health: the alarm handling's "primary degraded" reads it
        metrics.add_metric(name="PrimaryFailure", unit=MetricUnit.Count, value=int(failed))
    by_dimensions = [
        ("DecisionLatency", MetricUnit.Milliseconds, latency_ms, {"strategy": decision.strategy.value}),
        ("Decisions", MetricUnit.Count, 1, {"backend": decision.backend, "event": decision.event}),
    ]
    if decision.fallback_reason is not None:
        by_dimensions.append(("Fallbacks", MetricUnit.Count, 1, {"reason": decision.fallback_reason}))
    # A gauge of the registry against the serving adapter, with each decision: present in every minute
    # with traffic, by adapter, and known where the registry's copy is (the router's cached read).
    adapter = router_runtime.serving_adapter()
    unseen = len(adapter.unseen(decision.registry))
    by_dimensions.append(("UnseenTasks", MetricUnit.Count, unseen, {"adapter": adapter.name}))
    if decision.threshold is not None:
        escalated = int(decision.fallback_reason == "low_confidence")
        by_dimensions.append(
            ("Escalated", MetricUnit.Count, escalated, {"adapter": adapter.name, "strategy": decision.strategy.value})
        )
    for name, unit, value, dimensions in by_dimensions:
        with single_metric(name=name, unit=unit, value=value) as metric:
            for dimension, dimension_value in dimensions.items():
                metric.add_dimension(name=dimension, value=dimension_value)


def _capture(request: RouteRequest, decision: Decision, decided_ms: float) -> None:
    """Draw the turn; a drawn one, while the kill switch is on, is built, redacted and sent within the
    send bound. Never fails the request, and logs causes only: no content of the turn."""
    try:
        setup = router_runtime.capture()
        if setup is None:
            return
        unseen = setup.adapter.unseen(task.name for task in decision.shown_tasks)
        drawn = capture.draw(
            setup.settings.policy,
            # the primary's answers, escalated ones too: the live reliability curve needs the doubtful ones
            primary_decided=decision.primary.answer is not None,
            unseen=bool(unseen),
            random=setup.random,
        )
        if drawn is None or not setup.switch.is_on():
            return
        record = capture.build_record(
            record_id=uuid.uuid4().hex,
            decided_at=datetime.now(UTC),
            conversation=request.conversation,
            decision=decision,
            adapter=setup.adapter,
            sampled=drawn,
            latency_ms=decided_ms,
            redaction=setup.settings.redaction,
            requested_tasks=request.tasks,
        )
        started = time.perf_counter()
        dropped = setup.sink.send(capture.encode(record))
        send_ms = (time.perf_counter() - started) * 1000
    except Exception as error:  # a fault of the capture's own: counted as a drop, the decision stands
        logger.warning("capture dropped", extra={"reason": "error", "detail": type(error).__name__})
        metrics.add_metric(name="CaptureDropped", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="CaptureDropped", unit=MetricUnit.Count, value=int(dropped is not None))
    metrics.add_metric(name="CaptureSendLatency", unit=MetricUnit.Milliseconds, value=send_ms)
    if dropped is not None:
        logger.warning("capture dropped", extra={"reason": dropped.reason, "detail": dropped.detail})


def _refused(error: ApiError) -> dict[str, Any]:
    refusal = "NoBackendAvailable" if isinstance(error, NoBackendAvailable) else "InvalidRequest"
    metrics.add_metric(name=refusal, unit=MetricUnit.Count, value=1)
    # A 503's message says why no backend decided (never the conversation): the log carries the same
    # cause, as a warning, so that an operator sees it without the client's answer.
    log = logger.warning if isinstance(error, NoBackendAvailable) else logger.info
    log("refused", extra={"status": error.status, "code": error.code, "reason": error.message})
    return _response(error.status, error.body(), error.headers)


def _response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }
