"""The OpenAPI document and API Gateway's schemas agree with the models that validate requests."""

import json

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

from taskrouter.core.errors import ApiError
from taskrouter.core.request import RouteRequest, parse_route_request
from taskrouter.core.task_spec import TaskBody
from taskrouter.openapi import document, gateway_schema

GATEWAY_ROUTE = jsonschema.Draft4Validator(gateway_schema(RouteRequest))


def test_document_is_a_valid_openapi_31_with_every_operation():
    doc = document()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/route", "/tasks", "/tasks/{name}"}
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("model", [RouteRequest, TaskBody])
def test_gateway_schemas_are_draft4_and_self_contained(model):
    schema = gateway_schema(model)
    jsonschema.Draft4Validator.check_schema(schema)
    assert "$ref" not in json.dumps(schema)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "conversation": st.lists(
                st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                       "content": st.text(max_size=5)}),
                max_size=3,
            ),
        },
        optional={"current_task": st.none() | st.text(max_size=5) | st.integers(), "tasks": st.none() | st.lists(st.text(max_size=4), max_size=2), "strategy": st.sampled_from(["react", "x"])},
    )
)
def test_what_the_gateway_refuses_the_router_refuses_too(body):
    """The gateway may let through what only the router can judge (the last role), never the reverse."""
    try:
        parse_route_request(json.dumps(body).encode())
        router_accepts = True
    except ApiError:
        router_accepts = False
    if router_accepts:
        assert GATEWAY_ROUTE.is_valid(body)


def test_current_task_is_optional_in_the_document_and_the_gateway():
    schemas = document()["components"]["schemas"]
    assert schemas["RouteRequest"]["required"] == ["conversation"]
    assert "current_task" in schemas["RouteRequest"]["properties"]
    assert gateway_schema(RouteRequest)["required"] == ["conversation"]
    assert GATEWAY_ROUTE.is_valid({"conversation": [{"role": "user", "content": "hi"}]})
    assert parse_route_request(b'{"conversation": [{"role": "user", "content": "hi"}]}').current_task is None
