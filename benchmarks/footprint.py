"""Footprint of the router Lambda: deployment package size and cold start (init) time of its handler.

    .venv/bin/python benchmarks/footprint.py [--runs N]

Prints figures only (never asserts). The import is timed in fresh interpreters of the runtime's
version (CPython 3.13, found as `make bundle` finds it) over a replica of the bundle built for this
machine, so it is what a cold container pays before the first request: the handler's module, and the
router it builds at start-up (clients, `openai`, its client), with backends configured but nothing
called. It is timed twice: with the bundle's bytecode, and with sources alone (a bundle built
without CPython 3.13), whose modules are compiled on every cold start.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BUNDLE = ROOT / "build" / "lambda"
HOST_REPLICA = ROOT / "build" / "lambda-host-replica"
HANDLER_MODULE = "taskrouter.handlers.router"

_TIMER = f"""
import time
t = time.perf_counter()
import {HANDLER_MODULE}
print((time.perf_counter() - t) * 1000)
"""


# What the init phase needs to build the whole router, with no call made (no secret: a plain key).
INIT_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "footprint",
    "AWS_SECRET_ACCESS_KEY": "footprint",
    "TASKROUTER_TABLE_NAME": "footprint-tasks",
    "TASKROUTER_SAGEMAKER_ENDPOINT": "footprint-endpoint",
    "OPENAI_API_KEY": "sk-footprint",
    "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter",
}


def package_size() -> tuple[int, int]:
    """(zipped, unpacked) bytes of the bundle, zipped as the CDK zips an asset."""
    buffer = io.BytesIO()
    unpacked = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(BUNDLE.rglob("*")):
            if path.is_file():
                unpacked += path.stat().st_size
                archive.write(path, path.relative_to(BUNDLE))
    return buffer.tell(), unpacked


def import_times_ms(runs: int, *, bytecode: bool = True) -> list[float]:
    """Cold imports of the handler from a replica of the bundle built for this machine (same pinned
    versions, plus boto3 as Lambda's runtime provides it), each in a fresh isolated interpreter of the
    runtime's version that sees the replica alone, read-only like /var/task."""
    from infra.bundle import build_bundle, find_runtime_python

    runtime_python = find_runtime_python()
    if runtime_python is None:
        sys.exit("no CPython 3.13 found (LAMBDA_PYTHON, python3.13 on PATH, or pyenv): the runtime's imports need it")
    build_bundle(HOST_REPLICA, platform=f"manylinux2014_{platform.machine()}", with_runtime_provided=True,
                 runtime_python=runtime_python, bytecode=bytecode)
    for path in HOST_REPLICA.rglob("*"):
        path.chmod(path.stat().st_mode & ~0o222)
    script = f"import sys; sys.path.insert(0, {str(HOST_REPLICA)!r})\n" + _TIMER
    times = []
    try:
        for _ in range(runs):
            out = subprocess.run([runtime_python, "-I", "-S", "-B", "-c", script], check=True,
                                 capture_output=True, text=True, env=INIT_ENV)
            times.append(float(out.stdout.strip().splitlines()[-1]))
    finally:
        for path in [HOST_REPLICA, *HOST_REPLICA.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if not (BUNDLE / "taskrouter").exists():
        sys.exit("build/lambda is missing: run `make bundle` first")
    zipped, unpacked = package_size()
    print(f"package: {zipped / 1e6:.2f} MB zipped, {unpacked / 1e6:.2f} MB unpacked ({BUNDLE.relative_to(ROOT)})")
    for bytecode in (True, False):
        times = sorted(import_times_ms(args.runs, bytecode=bytecode))
        print(
            f"init, {'bytecode' if bytecode else 'sources alone'}: import {HANDLER_MODULE} and build its router "
            f"(cold, {args.runs} fresh CPython 3.13 interpreters): median {statistics.median(times):.0f} ms, "
            f"min {times[0]:.0f} ms, max {times[-1]:.0f} ms"
        )


if __name__ == "__main__":
    main()
