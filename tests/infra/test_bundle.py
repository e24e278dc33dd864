"""The Lambda bundle (build/lambda, built by `make bundle` before the tests run), built for the
python3.13 runtime whatever interpreter runs the build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from benchmarks.footprint import INIT_ENV, package_size
from infra import bundle, lambda_code
from infra.config import ROOT, ConfigError, load_stages
from infra.lambda_code import BUNDLE_DIR, OFF_LAMBDA, RUNTIME, runtime_requirements

pytestmark = pytest.mark.skipif(not BUNDLE_DIR.exists(), reason="run `make bundle` first")
RUNTIME_TAG = RUNTIME.name.removeprefix("python").replace(".", "")  # "313"
RUNTIME_PYTHON = bundle.find_runtime_python()
BUILD_PYTHON_3_12 = sorted(Path(bundle._pyenv_root() or "/nonexistent").glob("versions/3.12.*/bin/python3.12"))


def test_the_router_package_ships_with_its_sources_and_bytecode_of_the_runtime_version():
    assert RUNTIME.name == "python3.13"
    assert (BUNDLE_DIR / "taskrouter" / "handlers" / "router.py").exists()
    assert (BUNDLE_DIR / "taskrouter" / "handlers" / "__pycache__" / f"router.cpython-{RUNTIME_TAG}.pyc").exists()
    assert {"local", "evaluation", "datagen", "review", "training", "client.py", "cli.py", "doctor"} <= set(OFF_LAMBDA)
    for tool in OFF_LAMBDA:  # local mode, the client and CLI, evaluation, data generation and review
        assert not (BUNDLE_DIR / "taskrouter" / tool).exists(), f"{tool} stays off Lambda"
    assert all((ROOT / "lambdas" / "taskrouter" / tool).exists() for tool in OFF_LAMBDA)
    assert json.loads(bundle.BUNDLE_INFO.read_text()) == {"runtime": "python3.13", "bytecode": True}


def test_every_compiled_extension_is_built_for_the_runtime():
    """cp313 on arm64 (Graviton): an extension of another CPython or machine fails at import in Lambda."""
    extensions = list(BUNDLE_DIR.rglob("*.so"))
    assert extensions, "pydantic-core and jiter ship compiled extensions"
    for extension in extensions:
        assert extension.name.endswith(f".cpython-{RUNTIME_TAG}-aarch64-linux-gnu.so"), extension
    for wheel in BUNDLE_DIR.glob("*.dist-info/WHEEL"):
        tags = [line.split(": ", 1)[1] for line in wheel.read_text().splitlines() if line.startswith("Tag: ")]
        assert all(tag.endswith("-any") or (f"cp{RUNTIME_TAG}" in tag and "aarch64" in tag) for tag in tags), (wheel, tags)


def test_dependencies_ship_bytecode_only():
    others = [p for p in BUNDLE_DIR.rglob("*.py") if p.relative_to(BUNDLE_DIR).parts[0] != "taskrouter"]
    assert others == []
    assert (BUNDLE_DIR / "pydantic" / "main.pyc").exists()
    assert (BUNDLE_DIR / "aws_lambda_powertools" / "__init__.pyc").exists()


def test_runtime_dependencies_are_the_locked_ones_less_boto3():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "boto3==1.44.5" in declared and all(not r.startswith("boto3") for r in runtime_requirements())
    locked = bundle.read_lock()
    assert bundle.installed(BUNDLE_DIR) == locked
    for requirement in runtime_requirements():
        name, version = requirement.split("==")
        assert locked[bundle._normalized(name)] == version, requirement


def test_package_stays_under_10_mb_zipped():
    zipped, _ = package_size()
    assert zipped < 10_000_000


# -- built from any Python -----------------------------------------------------------------------------
def _build(python: str, target: Path, environ: dict[str, str], platform: str = bundle.LAMBDA_PLATFORM) -> subprocess.CompletedProcess:
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from pathlib import Path\nfrom infra.bundle import build_bundle\n"
        f"print(build_bundle(Path({str(target)!r}), platform={platform!r}, with_runtime_provided={platform != bundle.LAMBDA_PLATFORM}))"
    )
    return subprocess.run([python, "-I", "-c", script], env=environ, capture_output=True, text=True, timeout=600)


def _bare_environment(tmp_path: Path) -> dict[str, str]:
    """No CPython 3.13 to be found: no LAMBDA_PYTHON, no pyenv, nothing on PATH but the system's."""
    environment = {key: value for key, value in os.environ.items() if key not in ("LAMBDA_PYTHON", "PYENV_ROOT")}
    environment["PATH"] = "/usr/bin:/bin"
    environment["PYENV_ROOT"] = str(tmp_path / "no-pyenv")
    return environment


@pytest.mark.skipif(not BUILD_PYTHON_3_12, reason="CPython 3.12 under pyenv")
def test_a_build_under_3_12_without_3_13_ships_the_locked_sources_and_says_so(tmp_path):
    """pip under 3.12 with --python-version 3.13: its set is checked against the lock resolved for the
    runtime; without CPython 3.13 there is no bytecode, and the build says so."""
    target = tmp_path / "bundle"
    done = _build(str(BUILD_PYTHON_3_12[-1]), target, _bare_environment(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert "no CPython 3.13 found" in done.stderr and "the bundle ships sources" in done.stderr
    assert bundle.installed(target) == bundle.read_lock()
    assert not list(target.rglob("*.pyc")) and (target / "pydantic" / "main.py").exists()


@pytest.mark.skipif(RUNTIME_PYTHON is None, reason="CPython 3.13 (LAMBDA_PYTHON, PATH or pyenv)")
def test_a_host_replica_built_under_3_13_imports_the_handlers_isolated(tmp_path):
    """The bundle as Lambda sees it, for this machine: the runtime's interpreter, isolated (-I -S), the
    replica alone on its path, read-only; every handler imports and the router builds at start-up."""
    target = tmp_path / "replica"
    host = f"manylinux2014_{os.uname().machine}"
    done = _build(RUNTIME_PYTHON, target, {**os.environ, "LAMBDA_PYTHON": RUNTIME_PYTHON}, platform=host)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True"
    handlers = [f"taskrouter.handlers.{path.stem}" for path in (target / "taskrouter" / "handlers").glob("*.py") if path.stem != "__init__"]
    script = f"import sys; sys.path.insert(0, {str(target)!r})\n" + "".join(f"import {module}\n" for module in handlers)
    environment = {**INIT_ENV, "TASKROUTER_OPS_MODE_PARAMETER": "/taskrouter/test/ops-mode"}
    imported = subprocess.run([RUNTIME_PYTHON, "-I", "-S", "-B", "-c", script + "print(sys.version_info[:2])"],
                              env=environment, capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.strip().splitlines()[-1] == "(3, 13)"


def test_a_stage_with_provisioned_concurrency_refuses_a_bundle_of_sources(tmp_path, monkeypatch):
    info = tmp_path / "lambda-bundle.json"
    monkeypatch.setattr(lambda_code, "BUNDLE_INFO", info)
    monkeypatch.delenv(lambda_code.ALLOW_SOURCE_BUNDLE, raising=False)
    stages = load_stages()
    info.write_text(json.dumps({"runtime": "python3.13", "bytecode": False}))
    with pytest.raises(ConfigError, match="provisioned concurrency.*TASKROUTER_ALLOW_SOURCE_BUNDLE=1"):
        lambda_code.check_bundle_for(stages["prod"])
    lambda_code.check_bundle_for(stages["dev"])  # no provisioned concurrency: cold starts are accepted
    monkeypatch.setenv(lambda_code.ALLOW_SOURCE_BUNDLE, "1")
    lambda_code.check_bundle_for(stages["prod"])
    monkeypatch.delenv(lambda_code.ALLOW_SOURCE_BUNDLE)
    info.write_text(json.dumps({"runtime": "python3.13", "bytecode": True}))
    lambda_code.check_bundle_for(stages["prod"])


def test_a_lambda_python_that_is_not_3_13_is_refused():
    with pytest.raises(bundle.BundleError, match="LAMBDA_PYTHON"):
        bundle.find_runtime_python({"LAMBDA_PYTHON": sys.executable})
