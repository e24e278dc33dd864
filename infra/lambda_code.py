"""The Lambda functions' code in the CDK: one asset holding the `taskrouter` package and its runtime
dependencies, built for the runtime by `python -m infra.bundle` (`make bundle`) into build/lambda."""

from __future__ import annotations

import json
import os

from aws_cdk import aws_lambda as lambda_

from infra.bundle import BUNDLE_DIR, BUNDLE_INFO, OFF_LAMBDA, RUNTIME_VERSION, build_bundle, runtime_requirements
from infra.config import ConfigError, StageConfig

RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64
ALLOW_SOURCE_BUNDLE = "TASKROUTER_ALLOW_SOURCE_BUNDLE"
# cdk-nag's AwsSolutions-L1 asks for the newest runtime; the bundle's bytecode is one CPython's.
LAMBDA_RUNTIME_REASON = (
    f"python{RUNTIME_VERSION} on purpose (Amazon Linux 2023, supported until 2029-06-30): the bundle ships bytecode "
    f"compiled by CPython {RUNTIME_VERSION} for it, as /var/task is read-only (infra/bundle.py)"
)
assert RUNTIME.name == f"python{RUNTIME_VERSION}", "infra/bundle.py builds for the runtime the functions run"

__all__ = ["ARCHITECTURE", "BUNDLE_DIR", "LAMBDA_RUNTIME_REASON", "OFF_LAMBDA", "RUNTIME", "build_bundle", "check_bundle_for", "function_code",
           "runtime_requirements"]


def function_code() -> lambda_.Code:
    if not (BUNDLE_DIR / "taskrouter" / "__init__.py").exists():
        raise FileNotFoundError(f"{BUNDLE_DIR} is missing or incomplete: run `make bundle` first")
    return lambda_.Code.from_asset(str(BUNDLE_DIR))


def bundle_has_bytecode() -> bool:
    try:
        return bool(json.loads(BUNDLE_INFO.read_text())["bytecode"])
    except (OSError, ValueError, KeyError):
        return False


def check_bundle_for(stage: StageConfig) -> None:
    """A bundle of sources alone compiles them on every cold start (~2 s instead of ~0.8 s: benchmarks/footprint.py): a stage
    that pays for provisioned concurrency to keep cold starts off its users' path refuses it."""
    if stage.router_concurrency.provisioned_max == 0 or bundle_has_bytecode():
        return
    if os.environ.get(ALLOW_SOURCE_BUNDLE) == "1":
        return
    raise ConfigError(
        f"stage {stage.name}: build/lambda ships sources without bytecode (no CPython {RUNTIME_VERSION} was found "
        f"by `make bundle`), and this stage keeps provisioned concurrency: install CPython {RUNTIME_VERSION} "
        f"(README: the two commands) and run `make bundle` again, or set {ALLOW_SOURCE_BUNDLE}=1 to accept ~1 s "
        "cold starts"
    )
