"""docs/api.md against the OpenAPI document and the code, so that the reference cannot drift (issue 12):
every operation, parameter, field, enum value and status of `taskrouter.openapi.document()`, every error
code the API answers, and every value of `Event`, `BackendName` and `FallbackReason` is documented.

What is checked is read from the document and the code, never from a list kept here. The conventions
docs/api.md follows (its last section says the same):

- an operation is a heading `### METHOD /path`; its section runs to the next heading of level 1-3
  (`####` sub-headings stay inside it); no such heading names an operation the document lacks;
- in it, a table row starting  | `field` |  for every parameter and every property of the request and
  success-response schemas (nested ones too); the request ones with a cell `required` or `optional` as
  the document says, and their limits (minLength, maxLength, minItems, maxItems, pattern) literally in
  the row; every enum value of those schemas as `value`; a row starting  | `status` |  for every status
  of the operation's responses; its authentication; its content types; the body limit where there is
  a body;
- under `## Errors`, a row for every property of the error responses' schemas; under
  `### Error codes`, a row  | `code` | `status` | when |  for every code of the `ApiError` classes and
  of `make local`'s own HTTP refusals, naming `Retry-After` where the error sets it, and no other code;
- under `### `event``, `### `backend`` and `### `fallback_reason``, a row  | `value` | meaning |  for
  every value of the literal that `RouteDecision`'s field of that name holds, and no other.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import typing
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

import taskrouter
from taskrouter import openapi
from taskrouter.core import errors
from taskrouter.core.backends import BackendName, FallbackReason
from taskrouter.core.events import Event
from taskrouter.core.request import MAX_BODY_BYTES
from taskrouter.local import gateway

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
DOCUMENT = openapi.document()
SCHEMAS = DOCUMENT["components"]["schemas"]
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
LIMIT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "pattern")
OPERATIONS = [
    (path, method) for path, item in DOCUMENT["paths"].items() for method in HTTP_METHODS if method in item
]
ERRORS_HEADING = "Errors"
ERROR_CODES_HEADING = "Error codes"


# -- reading docs/api.md ---------------------------------------------------------------------------
def _sections() -> dict[str, list[str]]:
    """The lines under each heading of level 1-3, up to the next heading of the same or a higher
    level; headings inside fenced code blocks are not headings."""
    assert DOC.is_file(), f"{DOC} is missing: the API reference must live in the repository"
    lines = DOC.read_text(encoding="utf-8").splitlines()
    headings: list[tuple[int, int, str]] = []
    fenced = False
    for index, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.fullmatch(r"(#{1,6}) +(.+?) *#* *", line)
        if match:
            headings.append((index, len(match[1]), match[2]))
    sections: dict[str, list[str]] = {}
    for number, (index, level, title) in enumerate(headings):
        if level > 3:
            continue
        end = next((later for later, later_level, _ in headings[number + 1 :] if later_level <= level), len(lines))
        assert title not in sections, f"docs/api.md: the heading {title!r} appears twice"
        sections[title] = lines[index + 1 : end]
    return sections


def _rows(lines: list[str], first: str) -> list[list[str]]:
    """The cells of the table rows whose first cell is `first` in backticks."""
    prefix = f"| `{first}` |"
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines if line.strip().startswith(prefix)]


def _row_keys(lines: list[str]) -> list[str]:
    """The first cells of the table rows that start with a term in backticks."""
    return [match[1] for line in lines if (match := re.match(r"\s*\| `([^`]+)` \|", line))]


# -- reading the OpenAPI document ------------------------------------------------------------------
@dataclass
class _Fields:
    """Properties (with their schemas and whether required) and enum values reachable from schemas."""

    properties: dict[str, list[tuple[dict[str, Any], bool]]] = field(default_factory=dict)
    enums: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)

    def add(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self.add(item)
            return
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            assert name in SCHEMAS, f"the OpenAPI document refers to an unknown schema {name}"
            if name not in self.seen:
                self.seen.add(name)
                self.add(SCHEMAS[name])
            return
        self.enums.update(str(value) for value in node.get("enum", []))
        if "const" in node:
            self.enums.add(str(node["const"]))
        required = set(node.get("required", []))
        for name, schema in node.get("properties", {}).items():
            self.properties.setdefault(name, []).append((schema, name in required))
            self.add(schema)
        for key in ("items", "prefixItems", "anyOf", "oneOf", "allOf", "additionalProperties"):
            self.add(node.get(key))


def _limits(schema: dict[str, Any]) -> list[str]:
    """A property's limits as the document states them, its inline items' and alternatives' included
    (a referenced schema's limits belong to that schema's own properties)."""
    limits, stack = [], [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or "$ref" in node:
            continue
        limits += [str(node[key]) for key in LIMIT_KEYWORDS if key in node]
        stack += [node.get("items")] + list(node.get("anyOf", []))
    return limits


def _content_schemas(holder: dict[str, Any]) -> tuple[list[str], list[Any]]:
    content = holder.get("content", {})
    return list(content), [media.get("schema") for media in content.values()]


def _operation_title(path: str, method: str) -> str:
    return f"{method.upper()} {path}"


# -- reading the code ------------------------------------------------------------------------------
def _literal_values(annotation: Any) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(member.value) for member in annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    return [value for arg in typing.get_args(annotation) for value in _literal_values(arg)]


def _decision_field(literal: Any) -> str:
    """The field of `RouteDecision` whose annotation is `literal` (or `literal | None`)."""
    wanted = set(_literal_values(literal))
    fields = [name for name, info in openapi.RouteDecision.model_fields.items() if set(_literal_values(info.annotation)) == wanted]
    assert len(fields) == 1, f"no single RouteDecision field holds {literal}: {fields}"
    return fields[0]


# Tools that serve a page of their own, with an API of their own documented beside them (docs/review.md).
_OWN_API_TOOLS = ("review",)


def _api_error_classes() -> list[type[errors.ApiError]]:
    """Every ApiError class of the package that TaskRouter's API answers: modules defining a subclass
    (found in their source) are imported, then the class tree is walked."""
    package = Path(taskrouter.__file__).parent
    trees = {
        path: ast.parse(path.read_text(encoding="utf-8"))
        for path in package.rglob("*.py")
        if path.relative_to(package).parts[0] not in _OWN_API_TOOLS
    }
    names, modules, grew = {"ApiError"}, set(), True
    while grew:
        grew = False
        for path, tree in trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in names:
                    bases = {base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None) for base in node.bases}
                    if bases & names:
                        names.add(node.name)
                        modules.add(path)
                        grew = True
    for path in modules:
        relative = path.relative_to(package.parent).with_suffix("")
        importlib.import_module(".".join(relative.parts))
    classes, stack = [], [errors.ApiError]
    while stack:
        cls = stack.pop()
        classes.append(cls)
        stack += cls.__subclasses__()
    return [cls for cls in classes if not cls.__name__.startswith("_") and cls.__module__.split(".")[1] not in _OWN_API_TOOLS]


def _gateway_refusal(status: HTTPStatus) -> dict[str, Any]:
    """The body `make local`'s HTTP layer answers a refusal of this status with."""
    handler_class = gateway.handler_class(containers=None, client_timeout_s=1.0)
    handler = handler_class.__new__(handler_class)
    sent: list[bytes] = []
    handler._send = lambda _status, _headers, body: sent.append(body)
    handler.log_message = lambda *_: None
    handler._linger = lambda: None
    handler.send_error(status, "refused")
    return json.loads(sent[-1])


def _gateway_error_codes() -> dict[str, set[int]]:
    """The codes `make local`'s HTTP layer answers itself: every status its source refuses with, and
    its reading deadline's answer."""
    tree = ast.parse(inspect.getsource(gateway))
    statuses = {
        HTTPStatus[node.attr]
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "HTTPStatus"
        and node.attr in HTTPStatus.__members__
    }
    codes: dict[str, set[int]] = {}
    for status in statuses:
        if status >= 400 and "error" in (body := _gateway_refusal(status)):
            codes.setdefault(body["error"]["code"], set()).add(status.value)
    deadline = gateway._ReadDeadline
    status = int(deadline._ANSWER.split()[1])
    codes.setdefault(json.loads(deadline._BODY)["error"]["code"], set()).add(status)
    return codes


def _error_codes() -> tuple[dict[str, set[int]], set[str]]:
    """Every error code the API answers, with its statuses, and the codes that set Retry-After."""
    codes: dict[str, set[int]] = {}
    retryable: set[str] = set()
    for cls in _api_error_classes():
        codes.setdefault(cls.code, set()).add(cls.status)
        if "retry_after_s" in inspect.signature(cls.__init__).parameters:
            retryable.add(cls.code)
    for code, statuses in _gateway_error_codes().items():
        codes.setdefault(code, set()).update(statuses)
    return codes, retryable


def _report(missing: list[str]) -> str:
    return "docs/api.md does not document:\n- " + "\n- ".join(missing)


# -- the tests -------------------------------------------------------------------------------------
def test_the_document_has_operations_and_the_code_has_values():
    """Guards the derivations below: an empty source would check nothing."""
    assert OPERATIONS and SCHEMAS
    assert _literal_values(Event) and _literal_values(BackendName) and _literal_values(FallbackReason)
    codes, retryable = _error_codes()
    assert "invalid_request" in codes and retryable


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[_operation_title(*op) for op in OPERATIONS])
def test_every_operation_is_documented(path, method):
    title = _operation_title(path, method)
    sections = _sections()
    assert title in sections, _report([f"{title}: no heading '### {title}'"])
    lines = sections[title]
    text = "\n".join(lines)
    item = DOCUMENT["paths"][path]
    operation = item[method]
    missing: list[str] = []

    # what the caller sends: parameters and the request body
    request = _Fields()
    content_types: list[str] = []
    parameters = item.get("parameters", []) + operation.get("parameters", [])
    for parameter in parameters:
        request.properties.setdefault(parameter["name"], []).append((parameter.get("schema", {}), parameter.get("required", False)))
        request.add(parameter.get("schema"))
    if "requestBody" in operation:
        types_, schemas = _content_schemas(operation["requestBody"])
        content_types += types_
        request.add(schemas)
        body_limit = f"{MAX_BODY_BYTES // 1024} KiB"
        if body_limit not in text:
            missing.append(f"{title}: the body limit '{body_limit}'")
    for name, variants in request.properties.items():
        rows = _rows(lines, name)
        if not rows:
            missing.append(f"{title}: request field or parameter `{name}` (a row '| `{name}` |')")
            continue
        for schema, required in variants:
            word = "required" if required else "optional"
            if not any(word in row for row in rows):
                missing.append(f"{title}: `{name}` is {word} (a cell '{word}' in its row)")
            for limit in _limits(schema):
                if not any(limit in " | ".join(row) for row in rows):
                    missing.append(f"{title}: the limit {limit} of `{name}` (in its row)")

    # what the caller gets: statuses, and the success bodies' fields
    response = _Fields()
    for status, answer in operation["responses"].items():
        if not _rows(lines, status):
            missing.append(f"{title}: status {status} (a row '| `{status}` |')")
        if int(status) < 400:
            types_, schemas = _content_schemas(answer)
            content_types += types_
            response.add(schemas)
    for name in response.properties:
        if not _rows(lines, name):
            missing.append(f"{title}: response field `{name}` (a row '| `{name}` |')")

    for value in sorted(request.enums | response.enums):
        if f"`{value}`" not in text:
            missing.append(f"{title}: the value `{value}`")
    for content_type in sorted(set(content_types)):
        if content_type not in text:
            missing.append(f"{title}: the content type {content_type}")
    schemes = DOCUMENT["components"]["securitySchemes"]
    for requirement in operation.get("security", []):
        for scheme_name in requirement:
            scheme = schemes[scheme_name]
            if "x-amazon-apigateway-authtype" in scheme:  # a signature, named by the scheme
                if scheme_name.lower() not in text.lower():
                    missing.append(f"{title}: its authentication ({scheme_name})")
            elif f"`{scheme['name']}`" not in text:
                missing.append(f"{title}: its authentication (header `{scheme['name']}`)")
    assert not missing, _report(missing)


def test_no_heading_names_an_operation_the_document_lacks():
    operations = {_operation_title(*op) for op in OPERATIONS}
    pattern = re.compile(rf"({'|'.join(method.upper() for method in HTTP_METHODS)}) /\S*")
    extra = [title for title in _sections() if pattern.fullmatch(title) and title not in operations]
    assert not extra, f"docs/api.md documents operations the OpenAPI document lacks: {extra}"


def test_the_error_shape_is_documented():
    errors_shape = _Fields()
    for path, method in OPERATIONS:
        for status, answer in DOCUMENT["paths"][path][method]["responses"].items():
            if int(status) >= 400:
                errors_shape.add(_content_schemas(answer)[1])
    assert errors_shape.properties, "the OpenAPI document describes no error body"
    lines = _sections().get(ERRORS_HEADING)
    assert lines is not None, _report([f"a section '## {ERRORS_HEADING}'"])
    missing = [f"{ERRORS_HEADING}: field `{name}` (a row '| `{name}` |')" for name in errors_shape.properties if not _rows(lines, name)]
    assert not missing, _report(missing)


def test_every_error_code_is_documented_with_its_status():
    codes, retryable = _error_codes()
    lines = _sections().get(ERROR_CODES_HEADING)
    assert lines is not None, _report([f"a section '### {ERROR_CODES_HEADING}'"])
    missing: list[str] = []
    for code, statuses in sorted(codes.items()):
        rows = _rows(lines, code)
        if not rows:
            missing.append(f"{ERROR_CODES_HEADING}: code `{code}` (a row '| `{code}` | `status` | when |')")
            continue
        for status in sorted(statuses):
            if not any(len(row) >= 3 and f"`{status}`" in row[1] and row[2] for row in rows):
                missing.append(f"{ERROR_CODES_HEADING}: `{code}` with status `{status}` and when it happens")
        if code in retryable and not any("Retry-After" in " | ".join(row) for row in rows):
            missing.append(f"{ERROR_CODES_HEADING}: `{code}` sets Retry-After")
    assert not missing, _report(missing)

    # a documented code the API does not answer: only what the local HTTP layer answers for its status
    unknown = []
    for code in _row_keys(lines):
        if code in codes:
            continue
        statuses = [int(status) for row in _rows(lines, code) for status in re.findall(r"`(\d{3})`", row[1] if len(row) > 1 else "")]
        answered = {_gateway_refusal(HTTPStatus(status)).get("error", {}).get("code") for status in statuses}
        if code not in answered:
            unknown.append(code)
    assert not unknown, f"docs/api.md documents error codes the API never answers: {unknown}"


@pytest.mark.parametrize("literal", [Event, BackendName, FallbackReason], ids=["Event", "BackendName", "FallbackReason"])
def test_every_decision_value_is_documented(literal):
    heading = f"`{_decision_field(literal)}`"
    lines = _sections().get(heading)
    assert lines is not None, _report([f"a section '### {heading}'"])
    values = _literal_values(literal)
    missing = [
        f"{heading}: the value `{value}` and its meaning (a row '| `{value}` | ... |')"
        for value in values
        if not any(len(row) >= 2 and all(row[1:]) for row in _rows(lines, value))
    ]
    assert not missing, _report(missing)
    extra = sorted(set(_row_keys(lines)) - set(values))
    assert not extra, f"docs/api.md, {heading}: values the code does not have: {extra}"
