"""`POST /route` behind API Gateway (REST, proxy integration).

The proxy event is read directly rather than through Powertools' event resolver: that resolver
costs ~50 ms of import on every cold start, for the one route this function serves.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from taskrouter.adapters import runtime
from taskrouter.adapters.settings import DEFAULT_RETRY_AFTER_S
from taskrouter.core.errors import ApiError, NoBackendAvailable, NotFound
from taskrouter.core.request import decode_body, parse_route_request
from taskrouter.core.router import Decision, primary_failed

# Service and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE.
# Log lines carry the request id and decision fields, never the conversation.
logger = Logger()
metrics = Metrics()


def _start() -> None:
    """The init phase builds the router (clients, `openai`, the fallback's key) before any request.
    A broken environment is logged here, then answered per request (a 503 counted as unexpected)."""
    try:
        runtime.router()
    except Exception:
        logger.exception("router not built at start-up")


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
    decision = runtime.router().route(request)
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    body = {
        "task": decision.task,
        "event": decision.event,
        "backend": decision.backend,
        "fallback_reason": decision.fallback_reason,
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
        },
    )
    return _response(200, body)


def _record(decision: Decision, latency_ms: float) -> None:
    """EMF metrics of one decision: rates by service; latency by strategy (each has its own budget);
    counts by backend, event and fallback reason (each dimension set is its own EMF document)."""
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
    for name, unit, value, dimensions in by_dimensions:
        with single_metric(name=name, unit=unit, value=value) as metric:
            for dimension, dimension_value in dimensions.items():
                metric.add_dimension(name=dimension, value=dimension_value)


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
