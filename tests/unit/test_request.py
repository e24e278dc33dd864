import json

import pytest
from hypothesis import given, settings, strategies as st

from taskrouter.core.errors import ApiError, InvalidRequest, RequestTooLarge
from taskrouter.core.request import MAX_BODY_BYTES, decode_body, parse_route_request


def body(**fields):
    request = {"conversation": [{"role": "user", "content": "hello"}], "current_task": None, **fields}
    return json.dumps(request).encode()


def test_a_valid_request_parses():
    request = parse_route_request(body(tasks=["a_b_c"], strategy="react"))
    assert request.conversation[0].content == "hello" and request.tasks == ["a_b_c"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{", "body"),
        (b"[]", "body"),
        (b"{}", "conversation"),
        (body(conversation=[]), "conversation"),
        (body(conversation=[{"role": "user", "content": "x"}] * 51), "conversation"),
        (body(conversation=[{"role": "assistant", "content": "x"}]), "conversation"),
        (body(conversation=[{"role": "system", "content": "x"}]), "conversation[0].role"),
        (body(conversation=[{"role": "user", "content": ""}]), "conversation[0].content"),
        (body(conversation=[{"role": "user", "content": "x" * 4001}]), "conversation[0].content"),
        (body(current_task=3), "current_task"),
        (body(tasks="a_b_c"), "tasks"),
        (body(strategy="chain"), "strategy"),
        (body(extra=1), "body: unknown field"),
    ],
)
def test_each_broken_rule_names_its_field(raw, field):
    with pytest.raises(InvalidRequest) as caught:
        parse_route_request(raw)
    assert caught.value.message.startswith(field)


def test_unknown_keys_are_never_echoed():
    raw = json.dumps({"conversation": [{"role": "user", "content": "x", "card 4111 1111": 1}],
                      "current_task": None, "my secret": 2}).encode()
    with pytest.raises(InvalidRequest) as caught:
        parse_route_request(raw)
    assert "4111" not in caught.value.message and "secret" not in caught.value.message
    assert caught.value.message == "conversation[0]: unknown field; body: unknown field"


def test_absent_current_task_means_none():
    assert parse_route_request(json.dumps({"conversation": [{"role": "user", "content": "x"}]}).encode()).current_task is None


def test_size_limit():
    assert len(decode_body("x" * MAX_BODY_BYTES, is_base64=False)) == MAX_BODY_BYTES
    with pytest.raises(RequestTooLarge):
        decode_body("x" * (MAX_BODY_BYTES + 1), is_base64=False)
    with pytest.raises(RequestTooLarge):
        decode_body("é" * (MAX_BODY_BYTES // 2 + 1), is_base64=False)  # bytes, not characters
    with pytest.raises(InvalidRequest):
        decode_body(None, is_base64=False)
    with pytest.raises(InvalidRequest):
        decode_body("not base64!", is_base64=True)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(
                        st.sampled_from(["conversation", "current_task", "tasks", "strategy", "role", "content", "x"]),
                        children, max_size=5), max_leaves=20))
def test_no_json_value_escapes_the_contract_errors(value):
    try:
        parse_route_request(json.dumps(value).encode())
    except ApiError as error:
        assert error.status in (400, 413) and error.message


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_no_bytes_escape_the_contract_errors(raw):
    try:
        parse_route_request(raw)
    except ApiError as error:
        assert error.status == 400
