"""Whether an HTTP answer can be the AWS service's, judged on the wire before botocore parses it.

botocore reads whatever comes back as the protocol it expects: a proxy's HTML page at 200 becomes a
`KeyError` deep in its XML parser, a text 500 a `ResponseParserError`, and the same page answered to a
JSON service parses as an answer with nothing in it, which a check would take for "no quota", "no
build", "no task". The rules below are the protocols' own (smithy.io, AWS protocols):
- awsQuery: a successful answer is XML whose root is `<OperationNameResponse>`; an error is XML with
  an `<Error>` holding its `<Code>` (aws-query-protocol, "Response serialization", "Operation error
  serialization").
- awsJson 1.0/1.1 and restJson1: a JSON object; an empty body only for an answer with no output
  member, still under the protocol's JSON Content-Type; an error names its type in the
  `X-Amzn-Errortype` header or a `__type` or `code` field (aws-json, "Empty body serialization",
  "Operation error serialization").
- No AWS API redirects (botocore never follows one): a 3xx is a proxy's or a portal's.
Other protocols (CBOR) are left to botocore's parser, whose errors the caller classifies as well."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

_JSON_PROTOCOLS = frozenset({"json", "rest-json"})
_XML_PROTOCOLS = frozenset({"query", "ec2"})  # results wrapped in <OperationNameResponse>
_ERROR_TYPE_FIELDS = ("__type", "code", "Code")  # botocore reads all three


def foreign(operation: Any, status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    """Why this answer to `operation` (a botocore OperationModel) cannot be the service's, in a few
    words ("a redirect to ...", "a body that is not JSON"), or None when it can."""
    if 300 <= status < 400:
        return f"a redirect to {headers.get('location') or 'no location'}"
    if operation.has_streaming_output or operation.has_event_stream_output:
        return None
    protocol = operation.service_model.resolved_protocol
    if protocol in _JSON_PROTOCOLS:
        return _json(operation, status, headers, body)
    if protocol in _XML_PROTOCOLS:
        return _xml(operation, status, body)
    return None


def _json(operation: Any, status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    failed = status >= 300
    if not body.strip():
        if failed:
            return "an empty body, with no AWS error code"
        # The protocols' empty answer keeps the JSON Content-Type; a proxy's empty page has none.
        return None if "json" in headers.get("content-type", "") else "an empty body that does not say it is JSON"
    try:
        document = json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return "a body that is not JSON"
    if not isinstance(document, dict):
        return "JSON that is not an object"
    if failed:
        named = "x-amzn-errortype" in headers or any(field in document for field in _ERROR_TYPE_FIELDS)
        return None if named else "an error with no AWS error code"
    members = _body_members(operation.output_shape)
    if document and members is not None and not document.keys() & members:
        return "JSON with none of the answer's fields"
    return None


def _body_members(shape: Any) -> set[str] | None:
    """The JSON names of the members an answer carries in its body (None: the body is one member's
    payload, or the operation has no output)."""
    if shape is None or shape.serialization.get("payload"):
        return None
    return {
        member.serialization.get("name", name)
        for name, member in shape.members.items()
        if not member.serialization.get("location")  # headers and the status code are not in the body
    }


def _xml(operation: Any, status: int, body: bytes) -> str | None:
    if not body.strip():
        return "an empty body"
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "a body that is not XML (or XML cut short)"
    if status >= 300:
        errors = [element for element in root.iter() if _local(element.tag) == "Error"]
        coded = any(_local(child.tag) == "Code" and (child.text or "").strip() for error in errors for child in error)
        return None if coded else "an error with no AWS error code"
    wanted = f"{operation.name}Response"
    return None if _local(root.tag) == wanted else f"XML whose root is <{_local(root.tag)}>, not <{wanted}>"


def _local(tag: str) -> str:
    """An element's name without its namespace: "{https://sts.amazonaws.com/doc/2011-06-15/}Error" -> "Error"."""
    return tag.rpartition("}")[2]
