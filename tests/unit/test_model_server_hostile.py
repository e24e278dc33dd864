"""The model server under hostile input, on the tiny random Llama (no hub), over real HTTP: a grammar
with a dead end is never answered as a complete match (refused when it is compiled where xgrammar can
tell, else an error while decoding); broken Content-Length headers are answered, never held or
dropped; a lone surrogate is vLLM's 400, not a 500; a choice list is bounded; a port out of range is
a one-line usage error.

Why there is no vLLM answer to copy for a dead end: V1 aborts such a request (vllm-project/vllm#18783),
a 500 (#53665). Here a constraint that allows nothing at its start or after the text it forces is
refused when compiled (a 400, as a constraint that does not compile), and a dead end met while
decoding is the container's 500: both a 424 ModelError, the router's `error`."""

from __future__ import annotations

import json
import socket

import pytest

torch = pytest.importorskip("torch")  # the local-model extra; `make test` installs it
pytest.importorskip("xgrammar")

from taskrouter.model_server import cli  # noqa: E402
from taskrouter.model_server.constraints import MAX_CHOICE_BYTES, MAX_CHOICES  # noqa: E402
from taskrouter.model_server.limits import Limits  # noqa: E402

from .model_server_harness import INVOCATIONS, chat, serving, tiny_model  # noqa: E402

NO_OUTPUT = r"[^\x00-\U0010FFFF]"  # a character class that matches nothing


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    with serving(tiny_model(tmp_path_factory.mktemp("tiny")), Limits(deadline_s=120)) as server:
        yield server


def _container_error(status: int, answer: dict) -> tuple[int, str]:
    assert status == 424 and answer["ErrorCode"] == "ModelError", answer
    return answer["OriginalStatusCode"], answer["OriginalMessage"]


@pytest.mark.parametrize(
    ("constraint", "forced"),
    [
        ({"regex": "ab" + NO_OUTPUT}, "'ab'"),  # the issue's: answered "ab" with finish_reason "stop"
        ({"regex": NO_OUTPUT}, "at its start"),
        ({"grammar": 'root ::= "a" rest\nrest ::= rest "c"'}, "'a'"),  # a rule that can never complete
    ],
)
def test_a_constraint_that_allows_nothing_is_refused_when_compiled(served, constraint: dict, forced: str) -> None:
    status, answer = served.post(chat(max_tokens=8, structured_outputs=constraint))

    original, message = _container_error(status, answer)
    assert original == 400 and "allows no output" in message and forced in message and "\n" not in message


def test_a_dead_end_met_while_decoding_is_an_error_never_a_stop(served) -> None:
    # Either first letter may be chosen, so nothing is forced: the dead end is found after one token.
    status, answer = served.post(chat(max_tokens=8, structured_outputs={"regex": "(a|b)" + NO_OUTPUT}))

    original, message = _container_error(status, answer)
    assert original == 500 and "allows no token" in message


def test_a_complete_match_is_still_a_stop(served) -> None:
    status, answer = served.post(chat(max_tokens=64, structured_outputs={"choice": ["follow_up_email", "none"]}))

    assert status == 200 and answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"] in ("follow_up_email", "none")


@pytest.mark.parametrize(
    ("choices", "says"),
    [
        ([f"task_{index}" for index in range(MAX_CHOICES + 1)], f"over the local model server's {MAX_CHOICES}"),
        (["x" * 40_000, "y" * 40_000], f"over the local model server's {MAX_CHOICE_BYTES}"),
    ],
)
def test_a_choice_list_over_its_bounds_is_refused_in_one_line(served, choices: list[str], says: str) -> None:
    status, answer = served.post(chat(max_tokens=8, structured_outputs={"choice": choices}))

    original, message = _container_error(status, answer)
    assert original == 400 and says in message and "\n" not in message


def test_a_lone_surrogate_is_vllms_400_not_a_500(served) -> None:
    body = json.dumps(chat(max_tokens=2)).replace("Write up", "Write \\ud800 up")  # valid JSON, not valid UTF-16

    status, answer = _raw_post(served, body.encode())

    original, message = _container_error(status, json.loads(answer))
    assert original == 400 and "TextEncodeInput" in message  # the tokenizer's TypeError, as vLLM passes it on


@pytest.mark.parametrize("length", ["-1", "-100", "abc", "12abc", "1e3", "0x10", "", "5, 7"])
def test_a_content_length_that_is_not_a_byte_count_is_answered_and_the_connection_closed(served, length: str) -> None:
    request = (f"POST {INVOCATIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {length}\r\n\r\n{{}}").encode()  # fmt: skip

    with socket.create_connection(("127.0.0.1", served.http.server_port), timeout=30) as client:
        client.sendall(request)
        received = _read_until_closed(client)  # a held connection would time out here instead

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), received
    assert b"x-amzn-ErrorType: ValidationError:" in head and b"Connection: close" in head
    assert b"is not a byte count" in body


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http"])
def test_a_port_out_of_range_is_a_usage_error_in_one_line(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--model", "/nonexistent.gguf", "--port", port])

    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1 and "port number" in error


def _raw_post(served, body: bytes) -> tuple[int, bytes]:
    connection = served.connection(60)
    try:
        connection.request("POST", INVOCATIONS, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _read_until_closed(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize(
    ("options", "environment", "status", "says"),
    [
        (["--deadline-ms", "0"], {}, 2, "--deadline-ms"),
        (["--queue", "-1"], {}, 2, "--queue"),
        ([], {"TASKROUTER_MODEL_DEADLINE_MS": "soon"}, 1, "TASKROUTER_MODEL_DEADLINE_MS"),
        ([], {"TASKROUTER_MODEL_PREFIX_CACHE_MB": "0"}, 1, "TASKROUTER_MODEL_PREFIX_CACHE_MB"),
    ],
)
def test_a_limit_it_cannot_use_stops_it_in_one_line_before_loading(
    options: list[str], environment: dict[str, str], status: int, says: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    try:
        code = cli.main(["serve", "--model", "/nonexistent.gguf", "--port", "0", *options])
    except SystemExit as exited:  # argparse's usage error
        code = exited.code

    error = capsys.readouterr().err
    assert code == status and error.count("\n") == 1 and says in error
