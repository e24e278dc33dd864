"""Footprint of the router Lambda: deployment package size and cold import time of its handler.

    .venv/bin/python benchmarks/footprint.py [--runs N]

Prints figures only (never asserts). The import is timed in fresh interpreters over the built bundle
(build/lambda, `make bundle`), so it is what a cold container pays before the first request.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "build" / "lambda"
HANDLER_MODULE = "taskrouter.handlers.router"

_TIMER = f"""
import time
t = time.perf_counter()
import {HANDLER_MODULE}
print((time.perf_counter() - t) * 1000)
"""


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


def import_times_ms(runs: int) -> list[float]:
    # The bundle's compiled wheels are for Lambda (aarch64); here the same pinned versions come from
    # the virtualenv, which also holds the router's package (editable install).
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _TIMER], env=env, check=True, capture_output=True, text=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if not (BUNDLE / "taskrouter").exists():
        sys.exit("build/lambda is missing: run `make bundle` first")
    zipped, unpacked = package_size()
    print(f"package: {zipped / 1e6:.2f} MB zipped, {unpacked / 1e6:.2f} MB unpacked ({BUNDLE.relative_to(ROOT)})")
    times = sorted(import_times_ms(args.runs))
    print(
        f"import {HANDLER_MODULE} (cold, {args.runs} fresh interpreters): "
        f"median {statistics.median(times):.0f} ms, min {times[0]:.0f} ms, max {times[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
