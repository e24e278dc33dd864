"""The doctor's one way to AWS. A call answers, or fails as something a check can say in one line:
a permission the identity lacks, throttling botocore's retries did not outlast, or AWS's own error
(left as botocore's ClientError, for the checks that expect one, e.g. a stack that does not exist)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

# botocore's standard retry mode backs off on throttling; five attempts outlast a burst of other
# callers in the account, and what still fails is told as throttled rather than waited on for ever.
RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=10, read_timeout=30)

_DENIED = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
    "AuthorizationErrorException", "UnauthorizedException",
})
_THROTTLED = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "SlowDown",
})


class CallFailed(Exception):
    """A call that did not answer, with the IAM action it needed (e.g. `lambda:GetAccountSettings`)."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action}: {message}")
        self.action = action
        self.message = message


class Denied(CallFailed):
    """The identity lacks the permission."""


class Throttled(CallFailed):
    """AWS throttled the call after botocore's retries."""


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Aws:
    """Clients of one session and region, made once each. `service` is boto3's name ("lambda",
    "service-quotas"); `operation` AWS's ("GetAccountSettings"), which is also the IAM action's name."""

    def __init__(self, session: Any, config: Config = RETRIES) -> None:
        self._session = session
        self._config = config
        self._clients: dict[str, Any] = {}
        self._making = threading.Lock()  # clients are thread-safe once made; making them is not

    @property
    def region(self) -> str:
        return str(self._session.region_name)

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        client = self._client(service)
        with self._translated(client, operation):
            return getattr(client, _snake(operation))(**params)

    def items(self, service: str, operation: str, key: str, **params: Any) -> Iterator[Any]:
        """Every item under `key` of every page of a paginated operation."""
        client = self._client(service)
        with self._translated(client, operation):
            for page in client.get_paginator(_snake(operation)).paginate(**params):
                yield from page.get(key, [])

    def _client(self, service: str) -> Any:
        with self._making:
            if service not in self._clients:
                self._clients[service] = self._session.client(service, config=self._config)
            return self._clients[service]

    @staticmethod
    @contextmanager
    def _translated(client: Any, operation: str) -> Iterator[None]:
        action = f"{client.meta.service_model.signing_name}:{operation}"
        try:
            yield
        except ClientError as error:
            code, message = error_code(error), str(error.response.get("Error", {}).get("Message", error))
            if code in _DENIED:
                raise Denied(action, message) from None
            if code in _THROTTLED:
                raise Throttled(action, message) from None
            raise


def _snake(operation: str) -> str:
    from botocore import xform_name

    return xform_name(operation)
