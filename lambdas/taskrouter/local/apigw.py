"""API Gateway REST proxy events and Lambda contexts, built from a plain HTTP request."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

LOCAL_ACCOUNT = "000000000000"
LOCAL_STAGE = "local"


def proxy_event(
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    *,
    request_id: str | None = None,
    source_ip: str = "127.0.0.1",
    stage: str = LOCAL_STAGE,
) -> dict[str, Any]:
    """The event API Gateway (REST, proxy integration) would hand the function for this request.

    The body travels base64-encoded, as API Gateway sends binary bodies: the handler sees the
    exact bytes, whatever their encoding."""
    request_id = request_id or str(uuid.uuid4())
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT,
            "apiId": "local",
            "httpMethod": method,
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent")},
            "path": f"/{stage}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "resourcePath": path,
            "stage": stage,
        },
        "body": base64.b64encode(body).decode("ascii") if body else None,
        "isBase64Encoded": bool(body),
    }


@dataclass
class LambdaContext:
    """The attributes of a Lambda context that Powertools reads."""

    function_name: str = "taskrouter-local-Router"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:{LOCAL_ACCOUNT}:function:taskrouter-local-Router"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_s: float = 30.0

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_s * 1000)
