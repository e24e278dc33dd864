"""API Gateway REST proxy events and Lambda contexts, as the router Lambda receives them."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from taskrouter.local.apigw import LambdaContext  # noqa: F401  (re-exported for the tests)

API_ID = "a1b2c3d4e5"
ACCOUNT_ID = "123456789012"
STAGE = "v1"


def route_event(
    body: str | bytes | dict | list | None,
    *,
    request_id: str | None = None,
    is_base64: bool = False,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    path: str = "/route",
) -> dict[str, Any]:
    """A REST API (v1) proxy integration event for `POST /route` on stage `v1`.

    `body`: a dict or list is JSON-encoded; str/bytes are sent as they are (bytes are base64-encoded
    and flagged so); None sends no body.
    """
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode("ascii")
        is_base64 = True
    elif is_base64 and isinstance(body, str):
        body = base64.b64encode(body.encode("utf-8")).decode("ascii")
    request_id = request_id or str(uuid.uuid4())
    all_headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Host": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "integration-tests/1.0",
        "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        "x-api-key": "test-api-key-0123456789",
        **(headers or {}),
    }
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": API_ID,
            "extendedRequestId": "Ab1CdEfGhIjKlMn=",
            "httpMethod": method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "apiKey": "test-api-key-0123456789",
                "apiKeyId": "k1l2m3n4o5",
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": "203.0.113.7",
                "user": None,
                "userAgent": "integration-tests/1.0",
                "userArn": None,
            },
            "path": f"/{STAGE}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": "09/Apr/2025:12:34:56 +0000",
            "requestTimeEpoch": 1744202096000,
            "resourceId": "abc123",
            "resourcePath": path,
            "stage": STAGE,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }
