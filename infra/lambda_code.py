"""The Lambda functions' code: one asset holding the `taskrouter` package and its runtime
dependencies, built by `python -m infra.lambda_code` (`make bundle`) into build/lambda."""

from __future__ import annotations

import compileall
import py_compile
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from aws_cdk import aws_lambda as lambda_

from infra.config import ROOT

BUNDLE_DIR = ROOT / "build" / "lambda"
# The bundle ships bytecode, since Lambda's /var/task is read-only: without it every cold start
# compiles every imported module again (~1 s here, against ~0.3 s). Bytecode is specific to one
# CPython minor version, so the runtime is the build's own: 3.11 on this project's machines.
RUNTIME = lambda_.Runtime.PYTHON_3_11
ARCHITECTURE = lambda_.Architecture.ARM_64
LAMBDA_PLATFORM = "manylinux2014_aarch64"  # ARCHITECTURE's wheels
_PROVIDED_BY_THE_RUNTIME = {"boto3"}


# The tools that never run in a function: local mode, the client and its command line, evaluation,
# data generation, review and training.
OFF_LAMBDA = ("local", "client.py", "cli.py", "evaluation", "datagen", "review", "training", "repository.py")


def runtime_requirements(*, with_runtime_provided: bool = False) -> list[str]:
    """The project's runtime dependencies (pyproject.toml), less what Lambda's runtime provides."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [req for req in declared if with_runtime_provided or req.split("==")[0] not in _PROVIDED_BY_THE_RUNTIME]


def function_code() -> lambda_.Code:
    if not (BUNDLE_DIR / "taskrouter" / "__init__.py").exists():
        raise FileNotFoundError(f"{BUNDLE_DIR} is missing or incomplete: run `make bundle` first")
    return lambda_.Code.from_asset(str(BUNDLE_DIR))


def build_bundle(
    target: Path = BUNDLE_DIR, *, platform: str = LAMBDA_PLATFORM, with_runtime_provided: bool = False
) -> None:
    """Rebuild `target` from scratch, with the versions pinned in requirements.lock.

    Another `platform`, with what the runtime provides added, makes a replica of the bundle this
    machine can import, to measure it (benchmarks/footprint.py)."""
    runtime_version = RUNTIME.name.removeprefix("python")
    if f"{sys.version_info.major}.{sys.version_info.minor}" != runtime_version:
        sys.exit(f"the bundle's bytecode is for {RUNTIME.name}: build it with Python {runtime_version}")
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--only-binary=:all:", "--platform", platform, "--implementation", "cp", "--python-version", runtime_version,
         "--target", str(target), "-c", str(ROOT / "requirements.lock"),
         *runtime_requirements(with_runtime_provided=with_runtime_provided)],
        check=True,
    )
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts: unused in Lambda
    shutil.copytree(
        ROOT / "lambdas" / "taskrouter",
        target / "taskrouter",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *OFF_LAMBDA),
    )
    _compile(target)


def _compile(bundle: Path) -> None:
    """Hash-based bytecode never checked against its source: no mtime in it (the asset hash stays the
    same from build to build) and no stat of each source at import. Dependencies ship bytecode alone,
    in place of their sources (which keeps the package under 10 MB); the router's own package keeps
    its sources beside its bytecode, for readable tracebacks."""
    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    ok = compileall.compile_dir(bundle / "taskrouter", quiet=1, workers=0, invalidation_mode=unchecked)
    for path in bundle.iterdir():
        if path.name == "taskrouter" or path.name.endswith(".dist-info"):
            continue
        if path.is_dir():
            ok &= compileall.compile_dir(path, quiet=1, workers=0, legacy=True, invalidation_mode=unchecked)
            sources = list(path.rglob("*.py"))
        elif path.suffix == ".py":
            ok &= bool(py_compile.compile(str(path), cfile=f"{path}c", invalidation_mode=unchecked))
            sources = [path]
        else:
            continue
        for source in sources:
            source.unlink()
    if not ok:
        sys.exit("compiling the bundle's bytecode failed")


if __name__ == "__main__":
    build_bundle()
