"""The programmer's view of a deployed (or local) TaskRouter: `route(...)` and `tasks.*`.

    client = TaskRouterClient(stage="dev", region="us-east-1")        # finds the API from the stack
    client = TaskRouterClient(base_url="http://127.0.0.1:8080")       # make local
    client.route([{"role": "user", "content": "write the minutes"}])
    client.tasks.put("book_meeting", "Book a meeting with a prospect", if_match=3)

`/tasks` writes are signed with the caller's AWS credentials (SigV4), as the API requires in AWS.

Every answer other than success is a `TaskRouterError`: the API's status, code and message, or status
0 when no answer came (`unreachable`, `timeout`). A stage's AWS look-ups raise botocore's own errors.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

API_STACK = "{stage}-Api"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class TaskRouterError(Exception):
    """An answer other than success, as the API's error shape gives it; status 0: no answer came.
    `method` and `url` name the request that failed, when there was one."""

    def __init__(self, status: int, code: str, message: str, *, method: str | None = None, url: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.method, self.url = method, url


def has_http_scheme(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


class TaskRouterClient:
    def __init__(
        self,
        *,
        stage: str | None = None,
        region: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        session: Any = None,
        timeout_s: float = 30.0,
    ) -> None:
        if base_url is None and stage is None:
            raise ValueError(
                "give a stage (stage=: a deployed stage, whose API is found from its stack) "
                "or a base_url (base_url=: e.g. http://127.0.0.1:8080, `make local`'s)"
            )
        self._session = session
        self._region = region
        self._timeout_s = timeout_s
        self.stage = stage
        self.stack = API_STACK.format(stage=stage) if stage is not None else None
        self.api_key_id: str | None = None  # with a stage and no api_key: the API Gateway key used
        if base_url is None:
            outputs = self._stack_outputs(self.stack)
            base_url = outputs["ApiUrl"]
            if api_key is None:
                self.api_key_id = outputs["ApiKeyId"]
                api_key = self._aws("apigateway").get_api_key(apiKey=self.api_key_id, includeValue=True)["value"]
        if not has_http_scheme(base_url):
            raise ValueError(f"base_url {base_url!r} is not an http:// or https:// URL: add the scheme, e.g. "
                             f"'http://{base_url.split('://', 1)[-1]}'")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._signed = stage is not None  # deployed: writes need SigV4
        self.tasks = _Tasks(self)

    def route(
        self,
        conversation: list[dict[str, str]],
        current_task: str | None = None,
        *,
        tasks: list[str] | None = None,
        strategy: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"conversation": conversation}
        if current_task is not None:  # absent means none
            body["current_task"] = current_task
        if tasks is not None:
            body["tasks"] = tasks
        if strategy is not None:
            body["strategy"] = strategy
        return self.request("POST", "/route", body)

    def request(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None, sign: bool = False
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if self._api_key:
            all_headers["x-api-key"] = self._api_key
        if sign and self._signed:
            all_headers = self._sigv4(method, self.base_url + path, data, all_headers)
        url = self.base_url + path
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        where = {"method": method, "url": url}
        try:
            with _NO_PROXY.open(request, timeout=self._timeout_s) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            raise _error_of(error.code, error.read(), **where) from None
        except urllib.error.URLError as error:
            reason = getattr(error.reason, "strerror", None) or error.reason
            message = f"the server at {self.base_url} could not be reached ({reason})"
            raise TaskRouterError(0, "unreachable", message, **where) from None
        except TimeoutError:
            message = f"the server at {self.base_url} did not answer within {self._timeout_s:g} s"
            raise TaskRouterError(0, "timeout", message, **where) from None
        except (http.client.HTTPException, ConnectionError) as error:
            message = f"the server at {self.base_url} closed the connection without answering ({type(error).__name__})"
            raise TaskRouterError(0, "unreachable", message, **where) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            message = f"the server at {self.base_url} answered with something other than JSON: is it TaskRouter's API?"
            raise TaskRouterError(status, "invalid_response", message, **where) from None

    # -- AWS -------------------------------------------------------------------------------------
    def _aws(self, service: str) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.session.Session(region_name=self._region)
        return self._session.client(service)

    def _stack_outputs(self, stack_name: str) -> dict[str, str]:
        stacks = self._aws("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
        return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}

    def _sigv4(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        if self._session is None:
            self._aws("sts")  # creates the session
        credentials = self._session.get_credentials()
        if credentials is None:
            raise TaskRouterError(0, "no_credentials", "/tasks writes need AWS credentials to sign with")
        signed = AWSRequest(method=method, url=url, data=data, headers=headers)
        region = self._region or self._session.region_name
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(signed)
        return dict(signed.headers.items())


class _Tasks:
    def __init__(self, client: TaskRouterClient) -> None:
        self._client = client

    def list(self) -> list[dict[str, Any]]:
        return self._client.request("GET", "/tasks")["tasks"]

    def get(self, name: str) -> dict[str, Any]:
        return self._client.request("GET", f"/tasks/{name}")

    def put(
        self,
        name: str,
        description: str,
        examples: list[str] | None = None,
        *,
        if_match: int | None = None,
        create_only: bool = False,
    ) -> dict[str, Any]:
        """Create or replace; with `if_match`, only over that version; with `create_only`, only if the
        task does not exist (`If-None-Match: *`). Either way, a write already stored answers as done."""
        body = {"description": description, "examples": examples or []}
        headers = {**_if_match(if_match), **({"If-None-Match": "*"} if create_only else {})}
        return self._client.request("PUT", f"/tasks/{name}", body, headers=headers, sign=True)

    def delete(self, name: str, *, if_match: int | None = None) -> None:
        self._client.request("DELETE", f"/tasks/{name}", headers=_if_match(if_match), sign=True)


def _if_match(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": str(version)}


def _error_of(status: int, raw: bytes, **where: Any) -> TaskRouterError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # the API's error shape
        error = body["error"]
        if isinstance(error.get("code"), str):
            return TaskRouterError(status, error["code"], str(error.get("message", "")), **where)
    if isinstance(body, dict) and isinstance(body.get("message"), str):  # API Gateway's own: {"message": ...}
        return TaskRouterError(status, "http_error", body["message"], **where)
    message = raw.decode("utf-8", errors="replace").strip()[:200]
    return TaskRouterError(status, "http_error", message or "no body", **where)
