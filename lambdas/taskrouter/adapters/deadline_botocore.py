"""botocore calls that end by a deadline, their retries included.

botocore's `connect_timeout` and `read_timeout` bound each socket operation, not a call: a server that
sends a byte now and then never exceeds a read timeout, and tries add up (three of connect 2 s + read
5 s is 21 s). Here a client's HTTP goes through httpx2 and `DeadlineTransport` (deadline_transport.py,
the transport that bounds the OpenAI client's requests in total), from botocore's `before-send` event:
botocore builds and signs each request, then takes the response a `before-send` handler returns instead
of sending the request itself (botocore/endpoint.py, `_do_get_response`). Each try gets what is left of
the call's deadline, its answer's body included.

The tries are this module's, not botocore's: botocore's pause before a retry (up to 20 s, 5 s more on an
`x-amz-retry-after` header: botocore/retries/standard.py, `ExponentialBackoff`) is bounded by nothing a
caller sets. Here a pause is taken only when it ends before the deadline, and an answer that needs a
retry is retried only while time is left; what botocore's standard mode takes for a transient failure
is retried (`TransientRetryableChecker` and S3's throttling answers), nothing else.

The client's proxy settings are not read (httpx2 reads none for a transport it is given): the Lambda
functions that use this reach AWS directly.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from taskrouter.adapters.deadline_transport import DeadlineTransport

DEFAULT_ATTEMPTS = 3
# A pause before try n + 1 is random below FIRST_PAUSE_S * 2**(n - 1), botocore's scale for a failure that
# is no throttle (a throttle here is S3's 503 SlowDown: the next try is the only other request in flight).
FIRST_PAUSE_S = 0.05
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_TRANSIENT_CODES = frozenset({
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",  # TransientRetryableChecker
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",  # throttles
})  # fmt: skip

_ends_at: contextvars.ContextVar[float | None] = contextvars.ContextVar("taskrouter_botocore_deadline", default=None)


class DeadlineExceeded(Exception):
    """The call's deadline passed before it had an answer."""


class DeadlineBoundClient:
    """A botocore client whose every call is made with `call(operation, ends_at, **params)`, `ends_at` on
    `time.monotonic()`'s clock; the client itself must not be called any more (a request sent without a
    deadline raises)."""

    def __init__(
        self,
        client: Any,
        attempts: int = DEFAULT_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._attempts = attempts
        self._sleep = sleep
        self._jitter = jitter
        self._http = httpx2.Client(transport=DeadlineTransport(), follow_redirects=False)
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register_first(f"before-send.{service}", self._send)

    def call(self, operation: str, ends_at: float, **params: Any) -> dict[str, Any]:
        method = getattr(self._client, operation)
        with _until(ends_at):
            for attempt in range(1, self._attempts + 1):
                try:
                    return method(**params)
                except Exception as error:
                    pause = self._jitter() * FIRST_PAUSE_S * 2 ** (attempt - 1)
                    if attempt == self._attempts or not _transient(error) or time.monotonic() + pause >= ends_at:
                        raise
                self._sleep(pause)
        raise AssertionError("unreachable: the last try returns or raises")

    def _send(self, request: Any, **_: Any) -> AWSResponse:
        ends_at = _ends_at.get()
        if ends_at is None:
            raise RuntimeError("a request without a deadline: call it through DeadlineBoundClient.call")
        left = ends_at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("no time left for a try")
        body = request.body.read() if hasattr(request.body, "read") else request.body
        # `Expect: 100-continue` is botocore's own sender's to handle; this one sends the body at once.
        headers = [(name, value) for name, value in request.headers.items() if name.lower() != "expect"]
        try:
            response = self._http.request(request.method, request.url, headers=headers, content=body or b"", timeout=left)
        except httpx2.TimeoutException:
            # DeadlineTransport's timeout is what was left: the deadline, whichever operation it cut.
            raise DeadlineExceeded(f"no answer within the {left:.3f} s left") from None
        except httpx2.ConnectError as error:
            raise EndpointConnectionError(endpoint_url=request.url, error=error) from None
        except httpx2.TransportError:
            raise ConnectionClosedError(endpoint_url=request.url) from None
        return AWSResponse(request.url, response.status_code, dict(response.headers.items()), _Body(response.content))


@contextlib.contextmanager
def _until(ends_at: float) -> Iterator[None]:
    token = _ends_at.set(ends_at)
    try:
        yield
    finally:
        _ends_at.reset(token)


def _transient(error: Exception) -> bool:
    if isinstance(error, (BotocoreConnectionError, HTTPClientError)):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in _TRANSIENT_STATUS or error.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    return False


class _Body(io.BytesIO):
    """A response body as botocore reads one: `stream()` for its content, `read()` for a streamed output."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()
