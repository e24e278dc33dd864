"""How long `taskrouter eval` takes over the example dataset against `make local`, its backends fakes
(the HTTP doubles answering each turn's label), sequential and with 4 turns in flight.

    .venv/bin/python benchmarks/eval_runtime.py

Figures only: nothing here asserts.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taskrouter.cli import main  # noqa: E402
from tests.integration.test_eval import DATASET, TURNS, oracle_openai, oracle_sagemaker  # noqa: E402
from tests.integration.test_local_server import LocalServer  # noqa: E402


def run() -> None:
    sagemaker, openai = oracle_sagemaker(), oracle_openai()
    with tempfile.TemporaryDirectory() as state:
        server = LocalServer(
            Path(state), openai,
            TASKROUTER_SAGEMAKER_ENDPOINT="bench-endpoint", AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=sagemaker.url,
        )
        try:
            for concurrency in ("1", "4"):
                out = Path(state) / f"eval-{concurrency}"
                started = time.perf_counter()
                main(["eval", "--dataset", str(DATASET), "--target", server.url, "--out", str(out),
                      "--concurrency", concurrency, "--no-progress"])
                print(f"eval of {len(TURNS)} turns against make local, concurrency {concurrency}: "
                      f"{time.perf_counter() - started:.2f} s (report and PNGs included)")
        finally:
            server.stop()
            sagemaker.close()
            openai.close()


if __name__ == "__main__":
    run()
