"""The doctor's one way to AWS (and `taskrouter ops unseen`'s). A call answers, or fails as something a
check can say in one line: a permission the identity lacks, throttling botocore's retries did not
outlast, an endpoint that answers but not as the service does (a proxy's page, a wrong
AWS_ENDPOINT_URL, an answer cut short), no answer at all, or AWS's own error (left as botocore's
ClientError, for the checks that expect one, e.g. a stack that does not exist)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as NoConnection
from botocore.parsers import ResponseParserError

from taskrouter.doctor import wire

# botocore's standard retry mode backs off on throttling; five attempts outlast a burst of other
# callers in the account, and what still fails is told as throttled rather than waited on for ever.
# An answer in no AWS format is not retried: a proxy or a wrong endpoint answers the same again.
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


class Unanswered(CallFailed):
    """No answer of the service's; `fix` says where the endpoint came from."""

    def __init__(self, action: str, message: str, fix: str) -> None:
        super().__init__(action, message)
        self.fix = fix


class NotTheService(Unanswered):
    """The endpoint answered, but not as the service does."""


class Unreachable(Unanswered):
    """No answer at all: the connection was refused, reset or timed out (after botocore's retries)."""


class _Foreign(Exception):
    """Raised before botocore parses an answer that cannot be the service's; `Aws` names the endpoint."""

    def __init__(self, status: int, content_type: str, why: str) -> None:
        super().__init__(why)
        self.status, self.content_type, self.why = status, content_type, why


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Answer(dict):
    """A structure of an answer. The service always sends what a check reads by `answer["Member"]`
    (`.get` reads what it may leave out), so reading a member it lacks means the answer is not the
    service's: NotTheService, never a KeyError."""

    def __init__(self, members: dict[str, Any], missing: Callable[[str], Exception]) -> None:
        super().__init__(members)
        self._missing = missing

    def __missing__(self, member: str) -> Any:
        raise self._missing(member)


class Aws:
    """Clients of one session and region, made once each. `service` is boto3's name ("lambda",
    "service-quotas"); `operation` AWS's ("GetAccountSettings"), which is also the IAM action's name."""

    def __init__(self, session: Any, config: Config | None = None) -> None:
        self._session = session
        self._config = config or RETRIES
        self._clients: dict[str, Any] = {}
        self._making = threading.Lock()  # clients are thread-safe once made; making them is not

    @property
    def region(self) -> str:
        return str(self._session.region_name)

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        client = self._client(service)
        with self._translated(client, operation):
            answer = getattr(client, _snake(operation))(**params)
        return _readable(answer, client.meta.service_model.operation_model(operation).output_shape,
                         _missing_member(client, operation))

    def items(self, service: str, operation: str, key: str, **params: Any) -> Iterator[Any]:
        """Every item under `key` of every page of a paginated operation."""
        client = self._client(service)
        output = client.meta.service_model.operation_model(operation).output_shape
        missing = _missing_member(client, operation)
        with self._translated(client, operation):
            for page in client.get_paginator(_snake(operation)).paginate(**params):
                yield from _readable(page, output, missing).get(key, [])

    def client(self, service: str) -> Calls:
        """`service`'s client for code written against boto3's (operations' store): each method a call
        through `call`, its errors told as `call` tells them; `exceptions` botocore's own."""
        return Calls(self, service)

    def _client(self, service: str) -> Any:
        with self._making:
            if service not in self._clients:
                client = self._session.client(service, config=self._config)
                client.meta.events.register("before-parse", _refuse_foreign)
                self._clients[service] = client
            return self._clients[service]

    @staticmethod
    @contextmanager
    def _translated(client: Any, operation: str) -> Iterator[None]:
        action = _action(client, operation)
        try:
            yield
        except ClientError as error:
            code, message = error_code(error), str(error.response.get("Error", {}).get("Message", error))
            if code in _DENIED:
                raise Denied(action, message) from None
            if code in _THROTTLED:
                raise Throttled(action, message) from None
            raise
        except _Foreign as error:
            answered = f"HTTP {error.status} ({error.content_type or 'no Content-Type'}) with {error.why}"
            raise _not_the_service(client, action, answered) from None
        except ResponseParserError as error:  # a protocol the wire rules leave to botocore (CBOR)
            raise _not_the_service(client, action, f"what botocore cannot parse ({str(error).splitlines()[0]})") from None
        except (HTTPClientError, NoConnection) as error:  # refused, reset, timed out: botocore names the URL
            raise Unreachable(action, str(error), endpoint_fix(client, answered=False)) from None


class Calls:
    """A boto3 client's methods (`get_parameter(Name=...)`) as `Aws.call`s."""

    def __init__(self, aws: Aws, service: str) -> None:
        self._aws, self._service = aws, service

    @property
    def exceptions(self) -> Any:
        return self._aws._client(self._service).exceptions

    def __getattr__(self, method: str) -> Callable[..., dict[str, Any]]:
        operation = self._aws._client(self._service).meta.method_to_api_mapping.get(method)
        if operation is None:
            raise AttributeError(f"{self._service} has no operation {method}")
        return lambda **params: self._aws.call(self._service, operation, **params)


def _refuse_foreign(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's `before-parse` event, on each of the doctor's clients."""
    headers = response_dict["headers"]
    body = response_dict["body"] if isinstance(response_dict["body"], bytes) else b""
    why = wire.foreign(operation_model, response_dict["status_code"], headers, body)
    if why is not None:
        raise _Foreign(response_dict["status_code"], headers.get("content-type", ""), why)


def _not_the_service(client: Any, action: str, answered: str) -> NotTheService:
    service = client.meta.service_model.service_id
    return NotTheService(action, f"{client.meta.endpoint_url} answered {answered}: not an answer of {service}",
                         endpoint_fix(client))


def _missing_member(client: Any, operation: str) -> Callable[[str], Exception]:
    action, service = _action(client, operation), client.meta.service_model.service_id
    return lambda member: NotTheService(
        action, f"{client.meta.endpoint_url} answered with no {member}, which {service} always sends", endpoint_fix(client))


def _readable(value: Any, shape: Any, missing: Callable[[str], Exception]) -> Any:
    """The parsed answer with each structure of the protocol an Answer. A map is data (a function's
    environment, a secret's versions, a registry item and its attributes): left as it is, whatever it
    holds, since a key missing there is the data's, not the endpoint's."""
    if shape is None or not isinstance(value, (dict, list)):
        return value
    if shape.type_name == "structure" and isinstance(value, dict):
        return Answer({name: _readable(item, shape.members.get(name), missing) for name, item in value.items()}, missing)
    if shape.type_name == "list" and isinstance(value, list):
        return [_readable(item, shape.member, missing) for item in value]
    return value


def endpoint_fix(client: Any, *, answered: bool = True) -> str:
    """Where the client's endpoint comes from, as botocore resolves it: AWS_ENDPOINT_URL_<SERVICE>,
    then AWS_ENDPOINT_URL, then the profile's endpoint_url; otherwise AWS's own, behind any proxy."""
    service = client.meta.service_model.service_id
    endpoint = str(client.meta.endpoint_url).rstrip("/")
    specific = f"AWS_ENDPOINT_URL_{service.hyphenize().replace('-', '_').upper()}"
    for variable in (specific, "AWS_ENDPOINT_URL"):
        if os.environ.get(variable, "").rstrip("/") == endpoint:
            return f"{variable} sends {service}'s calls to {endpoint}: unset it, or point it at {service}"
    if not answered:
        return "check the network, a proxy on the way (HTTPS_PROXY) and the stage's region"
    return f"check what answers at {endpoint}: a proxy on the way (HTTPS_PROXY), or endpoint_url in the AWS profile's config"


def _action(client: Any, operation: str) -> str:
    return f"{client.meta.service_model.signing_name}:{operation}"


def _snake(operation: str) -> str:
    from botocore import xform_name

    return xform_name(operation)
