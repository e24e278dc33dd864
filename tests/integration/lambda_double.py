"""A test double of Lambda's Invoke API, as the router's botocore `lambda` client calls it to send a
captured turn to the teacher function.

AWS Lambda API Reference, "Invoke" (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html):
`POST /2015-03-31/functions/{FunctionName}/invocations`, the payload as the body, the invocation type
in the `X-Amz-Invocation-Type` header. The response's status is 202 for an asynchronous invocation
(`Event`: the event is queued, the body empty) and 204 for `DryRun` (parameters and permission
checked, nothing run). Errors carry `x-amzn-ErrorType`, where botocore reads the error code. Set
`AWS_ENDPOINT_URL_LAMBDA` to `url`.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from .servers import HttpDouble, Received, Reply

_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/?]+)/invocations(?:\?.*)?$")


class LambdaInvokeDouble(HttpDouble):
    """Answers every invocation as Lambda does when it accepts it, unless scripted otherwise
    (`script(LambdaInvokeDouble.accepted(delay_s=5))` stands for a Lambda endpoint that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.default = self.accepted()

    def reset(self) -> None:
        super().reset()
        self.default = self.accepted()

    def _accepts(self, received: Received) -> bool:
        return received.method == "POST" and _INVOKE.match(received.path) is not None

    def _handle(self, received: Received) -> Reply:
        if received.header("X-Amz-Invocation-Type") == "DryRun" and self._accepts(received):
            with self._lock:  # the router's check at start-up: answered, never taking a scripted reply
                self._received.append(received)
            return Reply(204, b"", {"X-Amzn-RequestId": "test"})
        return super()._handle(received)

    @staticmethod
    def accepted(delay_s: float = 0.0) -> Reply:
        return Reply(202, b"", {"Content-Type": "application/json", "X-Amzn-RequestId": "test"}, delay_s)

    @staticmethod
    def error(status: int, error_type: str, message: str) -> Reply:
        body = json.dumps({"Type": "User", "message": message}).encode()
        return Reply(status, body, {"Content-Type": "application/json", "x-amzn-ErrorType": error_type})

    # -- what the router sent --------------------------------------------------------------------
    def invocations(self, invocation_type: str = "Event") -> list[Received]:
        return [r for r in self.requests if r.header("X-Amz-Invocation-Type") == invocation_type]

    def records(self) -> list[dict[str, Any]]:
        """The payloads of the asynchronous invocations, decoded."""
        return [json.loads(r.raw_body) for r in self.invocations("Event")]

    @staticmethod
    def function_of(received: Received) -> str:
        match = _INVOKE.match(received.path)
        assert match is not None, received.path
        return urllib.parse.unquote(match.group("name"))
