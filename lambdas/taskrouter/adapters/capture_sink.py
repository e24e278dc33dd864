"""Sends a captured turn to the teacher function: one asynchronous Lambda invocation, within a bound.

The send happens before the handler returns, because nothing may run after it: Lambda freezes the
execution environment once the handler has answered, and a frozen one may be destroyed without
running anything more (docs/capture.md). An asynchronous invocation (`InvocationType="Event"`) is
answered `202` as soon as Lambda has queued the event, so the caller waits for the queueing only,
never for the teacher. The client makes one try, its connect and read timeouts the bound: a record
that cannot be sent within it is dropped (`CaptureDropped`), never retried on the request path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

# Lambda's limit on an asynchronous invocation's payload (the Invoke API reference): a record over it
# would be refused anyway, so it is dropped before any call.
MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024
_THROTTLED = frozenset({"TooManyRequestsException", "ThrottlingException"})

DropReason = Literal["timeout", "throttled", "too_large", "error"]


@dataclass(frozen=True)
class Dropped:
    """Why a record was not sent: a cause for logs and metrics, never any of its content."""

    reason: DropReason
    detail: str  # an error code or an exception's class name


class LambdaCaptureSink:
    """`send(payload)` invokes `function_name` asynchronously with `client` (a botocore `lambda` client
    whose timeouts are the bound and which makes one try); None when Lambda queued it, else `Dropped`.
    It never raises: a capture must not fail a decision."""

    def __init__(self, client: Any, function_name: str) -> None:
        self._client = client
        self._function_name = function_name

    def send(self, payload: bytes) -> Dropped | None:
        if len(payload) > MAX_EVENT_PAYLOAD_BYTES:
            return Dropped("too_large", f"{len(payload)} bytes")
        try:
            answer = self._client.invoke(FunctionName=self._function_name, InvocationType="Event", Payload=payload)
        except (ConnectTimeoutError, ReadTimeoutError) as error:
            return Dropped("timeout", type(error).__name__)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code") or "ClientError")
            return Dropped("throttled" if code in _THROTTLED else "error", code)
        except Exception as error:  # unreachable endpoint, credentials, a fault of botocore's: still a drop
            return Dropped("error", type(error).__name__)
        if answer.get("StatusCode") != 202:  # Event invocations are answered 202 Accepted
            return Dropped("error", f"status {answer.get('StatusCode')}")
        return None
