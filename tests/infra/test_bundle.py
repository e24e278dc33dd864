"""The Lambda bundle (build/lambda, built by `make bundle` before the tests run)."""

from __future__ import annotations

import tomllib

import pytest

from benchmarks.footprint import package_size
from infra.config import ROOT
from infra.lambda_code import BUNDLE_DIR, OFF_LAMBDA, RUNTIME, runtime_requirements

pytestmark = pytest.mark.skipif(not BUNDLE_DIR.exists(), reason="run `make bundle` first")


def test_the_router_package_ships_with_its_sources_and_bytecode_of_the_runtime_version():
    tag = f"cpython-{RUNTIME.name.removeprefix('python').replace('.', '')}"
    assert (BUNDLE_DIR / "taskrouter" / "handlers" / "router.py").exists()
    assert (BUNDLE_DIR / "taskrouter" / "handlers" / "__pycache__" / f"router.{tag}.pyc").exists()
    assert {"local", "evaluation", "datagen", "review", "training", "client.py", "cli.py"} <= set(OFF_LAMBDA)
    for tool in OFF_LAMBDA:  # local mode, the client and CLI, evaluation, data generation and review
        assert not (BUNDLE_DIR / "taskrouter" / tool).exists(), f"{tool} stays off Lambda"
    assert all((ROOT / "lambdas" / "taskrouter" / tool).exists() for tool in OFF_LAMBDA)


def test_dependencies_ship_bytecode_only():
    others = [p for p in BUNDLE_DIR.rglob("*.py") if p.relative_to(BUNDLE_DIR).parts[0] != "taskrouter"]
    assert others == []
    assert (BUNDLE_DIR / "pydantic" / "main.pyc").exists()
    assert (BUNDLE_DIR / "aws_lambda_powertools" / "__init__.pyc").exists()


def test_runtime_dependencies_are_the_pinned_ones_less_boto3():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "boto3==1.44.5" in declared and all(not r.startswith("boto3") for r in runtime_requirements())
    for requirement in runtime_requirements():
        name, version = requirement.split("==")
        dist = name.replace("-", "_")
        assert (BUNDLE_DIR / f"{dist}-{version}.dist-info").exists(), requirement


def test_package_stays_under_10_mb_zipped():
    zipped, _ = package_size()
    assert zipped < 10_000_000
