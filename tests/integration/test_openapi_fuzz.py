"""schemathesis against `make local` and its own OpenAPI document: generated requests, valid and
not, for every operation; none may get a server error or an answer off the document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_local_server import serving


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("fuzz"), "none") as (local, _):
        yield local


def test_openapi_document_is_served_and_names_every_operation(server):
    status, document = server.request("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values() if isinstance(op, dict) and "operationId" in op}
    assert operations == {"route", "listTasks", "getTask", "putTask", "deleteTask"}


def test_schemathesis_finds_no_server_error(server, tmp_path):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis), "run", f"{server.url}/openapi.json",
            "--url", server.url,
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples", "30",
            "--request-timeout", "10",
            "--seed", "20261125",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
