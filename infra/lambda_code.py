"""The Lambda functions' code: one asset holding the `taskrouter` package and its runtime
dependencies, built by `python -m infra.lambda_code` (`make bundle`) into build/lambda."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib

from aws_cdk import aws_lambda as lambda_

from infra.config import ROOT

BUNDLE_DIR = ROOT / "build" / "lambda"
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
# What pip must fetch for that runtime and architecture.
_PLATFORM = (
    "--platform", "manylinux2014_aarch64", "--implementation", "cp",
    "--python-version", RUNTIME.name.removeprefix("python"),
)  # fmt: skip
_PROVIDED_BY_THE_RUNTIME = {"boto3"}


def runtime_requirements() -> list[str]:
    """The project's runtime dependencies (pyproject.toml), less what Lambda's runtime provides."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [req for req in declared if req.split("==")[0] not in _PROVIDED_BY_THE_RUNTIME]


def function_code() -> lambda_.Code:
    if not (BUNDLE_DIR / "taskrouter" / "__init__.py").exists():
        raise FileNotFoundError(f"{BUNDLE_DIR} is missing or incomplete: run `make bundle` first")
    return lambda_.Code.from_asset(str(BUNDLE_DIR))


def build_bundle() -> None:
    """Rebuild BUNDLE_DIR from scratch, with the versions pinned in requirements.lock."""
    shutil.rmtree(BUNDLE_DIR, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--only-binary=:all:", *_PLATFORM, "--target", str(BUNDLE_DIR),
         "-c", str(ROOT / "requirements.lock"), *runtime_requirements()],
        check=True,
    )
    shutil.rmtree(BUNDLE_DIR / "bin", ignore_errors=True)  # console scripts: unused in Lambda
    shutil.copytree(
        ROOT / "lambdas" / "taskrouter",
        BUNDLE_DIR / "taskrouter",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "local"),  # local mode stays off Lambda
    )


if __name__ == "__main__":
    build_bundle()
