"""Decision time of the real primary on this CPU, through `make local`, with and without the prefix cache.

    .venv/bin/python benchmarks/local_model_latency.py [--requests N] [--threads N] [--dtype float32|bfloat16]

For each mode (prefix cache on, then off) it starts the model server (`taskrouter model serve` with
SmolLM2-135M-Instruct's GGUF, as `make local` starts it with TASKROUTER_LOCAL_MODEL, debugging on) and
`make local` pointed at it (10 s primary timeouts, no hedging, no fallback), its registry the default
tasks, then routes the same turn N times per strategy. Per strategy: the first decision (which, with the
cache on, fills it) and the p50 of the others, as the router's `latency_ms`; the model server's own p50;
the prompt's tokens, those the cache held, and the answer's tokens. The machine's load average is
printed beside them: on a CPU other processes share, every figure moves with it. Figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taskrouter.model_server.bundled import smollm2_gguf  # noqa: E402
from tests.integration.local_mode import LocalServer, free_port  # noqa: E402

STRATEGIES = ("zero_shot", "few_shot_cot", "react")
BODY = {
    "conversation": [
        {"role": "user", "content": "I just had a call with Dana from Acme about the renewal."},
        {"role": "assistant", "content": "Great! What would you like to do next?"},
        {"role": "user", "content": "Send her a follow-up email recapping what we agreed."},
    ],
}
START_TIMEOUT_S = 900
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6, help="decisions per strategy and mode (default 6)")
    parser.add_argument("--threads", type=int, help="the model server's torch threads (default: torch's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--modes", nargs="+", choices=("cache", "no-cache"), default=["cache", "no-cache"])
    args = parser.parse_args()
    print(f"SmolLM2-135M-Instruct (GGUF Q4_1, run in {args.dtype}), {os.cpu_count()} CPUs, "
          f"threads {args.threads or 'torch default'}, {args.requests} decisions per strategy")
    for mode in args.modes:
        run(mode == "cache", args)


def run(prefix_cache: bool, args: argparse.Namespace) -> None:
    port = free_port()
    command = [sys.executable, "-m", "taskrouter.model_server", "serve", "--model", str(smollm2_gguf()),
               "--port", str(port), "--dtype", args.dtype, "--debug"]
    command += [] if prefix_cache else ["--no-prefix-cache"]
    command += ["--threads", str(args.threads)] if args.threads else []
    model_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(model_url, server)
        with tempfile.TemporaryDirectory() as state:
            local = LocalServer(
                Path(state), start_timeout_s=START_TIMEOUT_S,
                TASKROUTER_SAGEMAKER_ENDPOINT="taskrouter-local", AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=model_url,
                AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", TASKROUTER_HEDGE_AFTER_MS="off",
                TASKROUTER_PRIMARY_TIMEOUT_MS="10000", TASKROUTER_PRIMARY_TIMEOUT_MS_FEW_SHOT_COT="10000",
                TASKROUTER_PRIMARY_TIMEOUT_MS_REACT="10000", TASKROUTER_LOCAL_CONTAINERS="1",
                TASKROUTER_CAPTURE_SHARE="0",
            )  # fmt: skip
            try:
                print(f"\nprefix cache {'on' if prefix_cache else 'off'} (load average {_load()})")
                for strategy in STRATEGIES:
                    measure(local, model_url, strategy, args.requests)
            finally:
                local.stop()
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(local: LocalServer, model_url: str, strategy: str, requests: int) -> None:
    decided, served, backends = [], [], set()
    for _ in range(requests):
        status, answer = local.request("POST", "/route", {**BODY, "strategy": strategy}, timeout_s=60)
        backends.add(answer.get("backend") if status == 200 else f"HTTP {status}")
        decided.append(answer.get("latency_ms", float("nan")) if status == 200 else float("nan"))
        served.append(_invocations(model_url)[-1])
    first, rest = decided[0], decided[1:] or decided
    server_ms = [1000 * record["seconds"] for record in served[1:] or served]
    last = served[-1]
    print(f"  {strategy:<13} first {first:8.0f} ms   p50 {statistics.median(rest):8.0f} ms   "
          f"(model server p50 {statistics.median(server_ms):8.0f} ms; prompt {len(last['prompt_token_ids'])} tokens, "
          f"{last['cached_tokens']} cached; answer {len(last['token_ids'])} tokens; backend {', '.join(sorted(backends))}; "
          f"load {_load()})")


def _invocations(model_url: str) -> list[dict]:
    with _NO_PROXY.open(f"{model_url}/debug/invocations", timeout=10) as response:
        return json.loads(response.read())["invocations"]


def _wait(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the model server exited ({process.returncode})")
        try:
            with _NO_PROXY.open(f"{url}/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the model server did not start")


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
