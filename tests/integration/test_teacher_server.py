"""`make local`'s teacher function (local/teacher_server.py): Lambda's Invoke API as the router calls it
through botocore, its events run one at a time, its errors in Lambda's shape; and `make local` starting
it, saying so, and its records landing under .local/capture/."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from taskrouter.local.console import CaptureShown, banner
from taskrouter.local.teacher_server import InvokeServer, TeacherFunction, function_name_of

from .local_mode import LocalServer
from .servers import OpenAIDouble, SageMakerRuntimeDouble

FUNCTION = "taskrouter-local-teacher"
MINUTES = "prepare_meeting_minutes"


class Recording:
    """A handler that records its events, and how many ran at once."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, event: Any, context: Any) -> None:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.02)
        with self._lock:
            self.events.append(event)
            self.running -= 1


@pytest.fixture
def served() -> Iterator[tuple[InvokeServer, Recording]]:
    handler = Recording()
    server = InvokeServer(("127.0.0.1", 0), TeacherFunction(FUNCTION, handler))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def lambda_client(url: str) -> Any:
    return botocore.session.get_session().create_client(
        "lambda", region_name="us-east-1", endpoint_url=url, aws_access_key_id="local", aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip


def test_an_event_invocation_is_answered_202_queued_and_run_one_at_a_time(served):
    server, handler = served
    client = lambda_client(server.url)
    events = [{"n": n} for n in range(5)]
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda e=e: answers.append(
            client.invoke(FunctionName=FUNCTION, InvocationType="Event", Payload=json.dumps(e))["StatusCode"]
        ))
        for e in events
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [202] * 5  # before the handler ran them: each takes 20 ms, one after another
    server.function.join()
    assert sorted(handler.events, key=lambda e: e["n"]) == events and handler.most_at_once == 1
    # by ARN and with a qualifier, as Invoke takes a function's name too
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION}:$LATEST"
    assert client.invoke(FunctionName=arn, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    assert client.invoke(FunctionName=FUNCTION, InvocationType="DryRun")["StatusCode"] == 204
    assert function_name_of(f"000000000000:function:{FUNCTION}") == FUNCTION


@pytest.mark.parametrize(
    ("function", "payload", "status", "error_type"),
    [
        ("another-function", b"{}", 404, "ResourceNotFoundException"),
        (FUNCTION, b'{"conversation": [not json', 400, "InvalidRequestContentException"),
        (FUNCTION, b'"' + b"x" * (1024 * 1024) + b'"', 413, "RequestTooLargeException"),
    ],
)
def test_a_bad_request_is_answered_in_lambda_s_error_shape(served, function, payload, status, error_type):
    server, handler = served
    with pytest.raises(ClientError) as raised:
        lambda_client(server.url).invoke(FunctionName=function, InvocationType="Event", Payload=payload)
    error = raised.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (status, error_type)
    message = error.get("message") or error.get("Message")  # as the error's shape spells it
    assert error["Type"] == "User" and message and "not json" not in message
    server.function.join()
    assert handler.events == []


def test_an_unknown_invocation_type_or_operation_is_refused(served):
    server, _ = served
    host, port = server.server_address[:2]
    for request, status, error_type in (
        (f"POST /2015-03-31/functions/{FUNCTION}/invocations HTTP/1.1\r\nX-Amz-Invocation-Type: Later\r\n"
         "Content-Length: 2\r\n\r\n{}", 400, "InvalidParameterValueException"),
        ("GET /2015-03-31/functions HTTP/1.1\r\n\r\n", 404, "UnknownOperationException"),
    ):  # fmt: skip
        with socket.create_connection((host, port), timeout=5) as connection:
            connection.sendall(request.encode())
            head, _, body = connection.makefile("rb").read().partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()) and f"x-amzn-ErrorType: {error_type}".encode() in head
        assert set(json.loads(body)) == {"Type", "message"}  # InvalidParameterValue's, UnknownOperation's shape


def test_the_banner_says_where_captured_turns_go_and_who_labels_them(tmp_path):
    from taskrouter.adapters.settings import RuntimeSettings
    from taskrouter.adapters.teacher_settings import TeacherSettings

    settings = RuntimeSettings.from_env({"TASKROUTER_TABLE_NAME": "t"})
    teacher = TeacherSettings.from_env({"TASKROUTER_CAPTURE_DIR": str(tmp_path / "capture")})
    text = "\n".join(banner("http://127.0.0.1:8080", settings, {}, tmp_path, 1, capture=CaptureShown(
        1.0, FUNCTION, "http://127.0.0.1:9", teacher,
    )))  # fmt: skip
    assert f"capture:  1 of the turns the primary decides (TASKROUTER_CAPTURE_SHARE; 0: off), written to {tmp_path}/capture/records/" in text
    assert "teacher gpt-4.1-mini, few_shot_cot (TASKROUTER_TEACHER_MODEL, TASKROUTER_TEACHER_STRATEGY)" in text
    assert "no OpenAI for the teacher" in text
    off = "\n".join(banner("http://127.0.0.1:8080", settings, {}, tmp_path, 1, capture=CaptureShown(0.0)))
    assert "capture:  off (TASKROUTER_CAPTURE_SHARE=0)" in off


def test_make_local_captures_a_turn_the_primary_decided_under_local_capture(tmp_path):
    """Router, teacher process and store together: the record the router sends is the one the teacher reads."""
    openai, sagemaker = OpenAIDouble(), SageMakerRuntimeDouble()
    openai.always(openai.answer(MINUTES))  # the teacher
    sagemaker.always(sagemaker.answer(MINUTES))
    server = LocalServer(
        tmp_path, openai, TASKROUTER_SAGEMAKER_ENDPOINT="local-endpoint", AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=sagemaker.url,
        TASKROUTER_PRIMARY_TIMEOUT_MS="5000", TASKROUTER_HEDGE_AFTER_MS="off",
    )  # fmt: skip
    try:
        match = re.search(r"function (\S+) at (http://127\.0\.0\.1:\d+)", server.banner)
        assert match and match.group(1) == FUNCTION, server.banner
        assert f"written to {tmp_path}/capture/records/" in server.banner
        said = "Write up the minutes of my call with dana@example.com"
        status, body = server.request("POST", "/route", {"conversation": [{"role": "user", "content": said}]})
        assert (status, body["backend"], body["task"]) == (200, "sagemaker", MINUTES)
        records = tmp_path / "capture" / "records"
        deadline = time.monotonic() + 30
        while not list(records.rglob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        (path,) = records.rglob("*.json")
        stored = json.loads(path.read_bytes())
        assert path.relative_to(records).parts[:2] == (f"date={stored['time'][:10]}", f"hour={stored['time'][11:13]}")
        assert stored["teacher"]["answer"] == MINUTES and stored["teacher"]["agrees"] is True
        assert "dana@example.com" not in path.read_text() and "dana@example.com" not in "".join(server.output)
        assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    finally:
        server.stop()
        openai.close()
        sagemaker.close()
