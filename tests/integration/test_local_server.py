"""`make local` over real HTTP: the server process, dynalite under its state folder, the API key
check, and a restart keeping the registry (README: Running locally)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from .local_mode import OPENER, LocalServer
from .servers import OpenAIDouble, SageMakerRuntimeDouble

ROUTE_BODY = {"conversation": [{"role": "user", "content": "Write up the minutes of my call"}]}  # current_task: absent


@contextlib.contextmanager
def serving(state_dir: Path, answer: str, **env: str) -> Iterator[tuple[LocalServer, OpenAIDouble]]:
    """`make local` under `state_dir`, its fallback an OpenAI double always answering `answer`."""
    openai = OpenAIDouble()
    openai.always(openai.answer(answer))
    server = LocalServer(state_dir, openai, **env)
    try:
        yield server, openai
    finally:
        server.stop()
        openai.close()


@pytest.fixture(scope="module")
def openai() -> Iterator[OpenAIDouble]:
    double = OpenAIDouble()
    double.always(double.answer("prepare_meeting_minutes"))
    yield double
    double.close()


def test_serves_the_contract_with_the_fallback_from_the_environment(tmp_path, openai):
    server = LocalServer(tmp_path, openai)
    try:
        status, body = server.request("POST", "/route", ROUTE_BODY)
        assert status == 200
        assert (body["task"], body["event"], body["backend"], body["fallback_reason"]) == (
            "prepare_meeting_minutes", "start", "openai", "not_configured",
        )
        assert server.request("POST", "/route", {"conversation": []})[0] == 400
        sent = openai.requests[-1].json()
        enum = sent["response_format"]["json_schema"]["schema"]["properties"]["task"]["enum"]
        assert {"prepare_meeting_minutes", "follow_up_email", "prepare_linkedin_post",
                "structure_ideas_into_doc", "create_one_minute_pitch"} <= set(enum)
    finally:
        server.stop()


def test_api_key_is_checked_when_set(tmp_path, openai):
    server = LocalServer(tmp_path, openai, TASKROUTER_API_KEY="local-key-123")
    try:
        assert server.request("POST", "/route", ROUTE_BODY) == (403, {"message": "Forbidden"})
        assert server.request("POST", "/route", ROUTE_BODY, {"x-api-key": "wrong"})[0] == 403
        assert server.request("POST", "/route", ROUTE_BODY, {"x-api-key": "local-key-123"})[0] == 200
        assert server.request("GET", "/health") == (200, {"status": "ok"})  # health needs no key
    finally:
        server.stop()


def test_registry_is_seeded_once_and_survives_a_restart(tmp_path, openai):
    first = LocalServer(tmp_path, openai)
    try:
        assert "seeded with 9 default tasks" in "".join(first.output)
        client = boto3.client(
            "dynamodb", endpoint_url=first.dynamodb_endpoint, region_name="us-east-1",
            aws_access_key_id="local", aws_secret_access_key="local",
        )
        client.delete_item(TableName="taskrouter-local-tasks", Key={"pk": {"S": "TASK"}, "sk": {"S": "qualify_lead"}})
    finally:
        first.stop()
    assert (tmp_path / "dynalite").is_dir()

    second = LocalServer(tmp_path, openai)
    try:
        assert "registry seeded" not in "".join(second.output)
        second.request("POST", "/route", ROUTE_BODY)
        sent = openai.requests[-1].json()
        enum = sent["response_format"]["json_schema"]["schema"]["properties"]["task"]["enum"]
        assert "qualify_lead" not in enum and "send_client_information" in enum
    finally:
        second.stop()


# -- HTTP robustness: slow, idle, malformed and concurrent clients (README: Running locally) --------------
def _raw(server: LocalServer, data: bytes, timeout_s: float = 10) -> bytes:
    """Send raw bytes on a fresh connection and read the answer until the server closes it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s) as connection:
        connection.sendall(data)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _status_and_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


@pytest.fixture(scope="module")
def robust(tmp_path_factory, openai):
    server = LocalServer(tmp_path_factory.mktemp("robust"), openai, TASKROUTER_LOCAL_CLIENT_TIMEOUT_S="1.5")
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello on the plain port
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /health HTTP/9.9\r\n\r\n", 505),
        (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"POST /route HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /route HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /route HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
        (b"POST /route HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
        (b"POST /route HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"POST /route HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
        (b"POST /route HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]", 400),  # reaches the router: its own 400
        (b"GET /health HTTP/0.9\r\n\r\n", 505),  # http.server would answer with no status line
        (b"GET /health HTTP/0.9\r\nno colon\r\n\r\n", 505),
        (b"   \r\n\r\n", 400),  # a request line of blanks
    ],
)
def test_each_malformed_request_gets_its_4xx_in_the_contract_shape(robust, raw, status):
    answer = _raw(robust, raw.replace(b"\r\n", b"\r\nConnection: close\r\n", 1))  # one answer, then EOF
    got, error = _status_and_error(answer)
    assert got == status and set(error) == {"code", "message"}
    assert robust.request("GET", "/health") == (200, {"status": "ok"})


def test_a_slow_body_gets_408_and_an_idle_connection_is_let_go(robust):
    answer = _raw(robust, b"POST /route HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"conv")
    assert _status_and_error(answer) == (408, {"code": "request_timeout", "message": "the request did not arrive in time"})
    answer = _raw(robust, b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    assert _status_and_error(answer)[0] == 408
    assert _raw(robust, b"") == b""  # an idle connection is closed after the client time limit


def test_idle_and_half_sent_connections_stall_nobody(robust):
    idle = socket.create_connection(("127.0.0.1", robust.port))
    half = socket.create_connection(("127.0.0.1", robust.port))
    half.sendall(b"POST /route HTTP/1.1\r\nContent-Length: 500\r\n\r\n{\"conversation\": [")
    try:
        assert robust.request("GET", "/health") == (200, {"status": "ok"})
        assert robust.request("POST", "/route", ROUTE_BODY)[0] == 200
    finally:
        idle.close()
        half.close()


def test_keep_alive_serves_several_requests_on_one_connection(robust):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", robust.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("POST", "/route", json.dumps(ROUTE_BODY), {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["task"] == "prepare_meeting_minutes"
    finally:
        connection.close()


class _GatheringOpenAI(OpenAIDouble):
    """Holds each request until `parties` are in flight at once: answers prove they were concurrent."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=20)

    def _handle(self, received):
        reply = super()._handle(received)
        self.barrier.wait()
        return reply


def test_eight_concurrent_clients_are_served_at_once(tmp_path):
    gathering = _GatheringOpenAI(parties=4)  # as many as the server's containers
    gathering.always(gathering.answer("follow_up_email"))
    server = LocalServer(tmp_path, gathering, TASKROUTER_LOCAL_CONTAINERS="4")
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: server.request("POST", "/route", ROUTE_BODY), range(8)))
        assert [(status, body["task"]) for status, body in answers] == [(200, "follow_up_email")] * 8
        assert not gathering.barrier.broken
    finally:
        server.stop()
        gathering.close()


def test_the_api_key_check_takes_any_header_without_failing(tmp_path, openai):
    server = LocalServer(tmp_path, openai, TASKROUTER_API_KEY="local-key-123")
    try:
        for key in ("local-key-12", "local-key-1234", "ключ", "\udcff"):
            raw = f"GET /tasks HTTP/1.1\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n".encode("utf-8", "surrogateescape")
            assert _raw(server, raw).startswith(b"HTTP/1.1 403 ")
        assert server.request("GET", "/openapi.json")[0] == 200  # public, as /health: it holds no data
    finally:
        server.stop()


def test_each_strategy_keeps_its_own_primary_timeout(tmp_path, openai):
    """The same slow primary misses zero-shot's budget and answers within chain of thought's."""
    sagemaker = SageMakerRuntimeDouble()
    sagemaker.always(sagemaker.answer("The user wants the minutes.\nAnswer: prepare_meeting_minutes", delay_s=0.6))
    server = LocalServer(
        tmp_path, openai,
        TASKROUTER_SAGEMAKER_ENDPOINT="local-endpoint", AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=sagemaker.url,
        TASKROUTER_PRIMARY_TIMEOUT_MS="300", TASKROUTER_PRIMARY_TIMEOUT_MS_FEW_SHOT_COT="5000",
    )
    try:
        status, zero_shot = server.request("POST", "/route", ROUTE_BODY)
        assert (status, zero_shot["backend"], zero_shot["fallback_reason"]) == (200, "openai", "timeout")
        status, cot = server.request("POST", "/route", {**ROUTE_BODY, "strategy": "few_shot_cot"})
        assert (status, cot["backend"], cot["task"]) == (200, "sagemaker", "prepare_meeting_minutes")
        assert sagemaker.refusals == []
    finally:
        server.stop()
        sagemaker.close()


def test_blank_lines_before_a_request_are_ignored(robust):
    answer = _raw(robust, b"\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status": "ok"}')


def test_a_trickling_client_is_answered_408_at_its_deadline(robust):
    """One header line a second: every read is quick, the request as a whole is not (1.5 s here)."""
    with socket.create_connection(("127.0.0.1", robust.port), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\n")
        answer = b""
        for i in range(8):
            time.sleep(0.5)
            try:
                connection.sendall(f"X-Slow-{i}: x\r\n".encode())
            except OSError:
                break
        with contextlib.suppress(OSError):
            while chunk := connection.recv(65536):
                answer += chunk
    assert _status_and_error(answer)[0] == 408


def test_a_refused_request_with_a_body_does_not_poison_the_connection(tmp_path, openai):
    """A 403 sent before the body was read closes the connection; the client's next request, on a
    new one, is read from its own first byte (not from the old body)."""
    import http.client

    server = LocalServer(tmp_path, openai, TASKROUTER_API_KEY="local-key-123")
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        body = json.dumps(ROUTE_BODY)
        connection.request("POST", "/route", body, {"x-api-key": "wrong", "Content-Type": "application/json"})
        refused = connection.getresponse()
        assert (refused.status, json.loads(refused.read())) == (403, {"message": "Forbidden"})
        connection.request("POST", "/route", body, {"x-api-key": "local-key-123", "Content-Type": "application/json"})
        accepted = connection.getresponse()
        assert accepted.status == 200 and json.loads(accepted.read())["task"] == "prepare_meeting_minutes"
        # Expect: 100-continue is answered with the refusal itself, before any body is sent
        head = "POST /route HTTP/1.1\r\nContent-Length: 50000000\r\nExpect: 100-continue\r\nx-api-key: local-key-123\r\n\r\n"
        assert _status_and_error(_raw(server, head.encode()))[0] == 413
        head = "POST /route HTTP/1.1\r\nContent-Length: 20\r\nExpect: 100-continue\r\nx-api-key: wrong\r\n\r\n"
        assert _raw(server, head.encode()).startswith(b"HTTP/1.1 403 ")
        connection.close()
    finally:
        server.stop()


def test_a_body_over_the_limit_is_answered_413_not_a_reset(robust):
    # urllib writes the whole body before it reads: the refused body is read and dropped to its end,
    # well past what the kernel's buffers could hold for it (a reset would lose the answer)
    request = urllib.request.Request(
        robust.url + "/route", data=b"x" * (40 * 1024 * 1024), method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        OPENER.open(request, timeout=20)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["code"] == "request_too_large"


def test_a_dead_container_is_replaced_and_its_request_served_by_another(tmp_path, openai):
    import signal as signals

    server = LocalServer(tmp_path, openai, TASKROUTER_LOCAL_CONTAINERS="2")
    try:
        pids = [int(pid) for pid in re.findall(r"container (\d+) ready", "".join(server.output))]
        assert len(pids) == 2
        os.kill(pids[0], signals.SIGKILL)
        time.sleep(0.2)
        for _ in range(4):  # whichever container each request goes to, every one is answered
            assert server.request("POST", "/route", ROUTE_BODY)[0] == 200
        deadline = time.monotonic() + 60
        while len(re.findall(r"container (\d+) ready", "".join(server.output))) < 3:
            assert time.monotonic() < deadline, "no replacement container started"
            time.sleep(0.1)
    finally:
        server.stop()
