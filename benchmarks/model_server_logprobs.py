"""What logprobs cost the local model server on this CPU: the router's requests with and without them.

    .venv/bin/python benchmarks/model_server_logprobs.py [--requests N] [--top K]

SmolLM2-135M-Instruct's GGUF in the model server's engine, in this process (no HTTP), the prefix cache
on and filled first, the default task list. For zero-shot and few-shot CoT, the router's request for
one turn is decoded N times without logprobs and N times with them (`logprobs: true`, as the router
asks; `--top K` adds K alternatives), interleaved, each first in turn, so that both see the same load:
the median of each, per request and per generated token. Then the scoring alone (a log-softmax over
the vocabulary, and the top K) timed on its own, per token: on a busy CPU the decodes' difference is
noise around it. The machine's load average is printed beside them: on a CPU other processes share,
every figure moves with it. Figures only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from taskrouter.core.prompting import build_prompt  # noqa: E402
from taskrouter.core.request import Message, Strategy  # noqa: E402
from taskrouter.core.task_spec import load_task_file  # noqa: E402
from taskrouter.model_server.bundled import smollm2_gguf  # noqa: E402
from taskrouter.model_server.constraints import Grammars  # noqa: E402
from taskrouter.model_server.engine import Engine  # noqa: E402
from taskrouter.model_server.limits import Limits  # noqa: E402
from taskrouter.model_server.loading import load  # noqa: E402
from taskrouter.model_server.logprobs import scored  # noqa: E402

TASKS_FILE = ROOT / "tasks" / "default_tasks.json"
TURN = [Message(role="user", content="Send Dana a follow-up email recapping what we agreed on the call.")]
STRATEGIES = (Strategy.ZERO_SHOT, Strategy.FEW_SHOT_COT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5, help="decodes per strategy, each way (default 5)")
    parser.add_argument("--top", type=int, default=0, help="alternatives a token when asked (default 0, the router's)")
    args = parser.parse_args()
    loaded = load(smollm2_gguf(), {})
    engine = Engine(loaded, limits=Limits(deadline_s=3600))
    grammars = Grammars(loaded.tokenizer, loaded.vocab_size, engine.stop_ids)
    tasks = {task.name: task for task in load_task_file(TASKS_FILE, updated_at="")}
    print(f"SmolLM2-135M-Instruct (GGUF, float32), vocabulary {loaded.vocab_size}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads; {args.requests} decodes each way; top_logprobs {args.top}")
    for strategy in STRATEGIES:
        prompt = build_prompt(strategy, TURN, tasks, None)
        grammar = grammars.compile(prompt.output_constraint())

        def decode(logprobs: int | None) -> tuple[float, int]:
            done = engine.complete(prompt.messages(), grammar=grammar, max_tokens=prompt.max_answer_tokens,
                                   logprobs=logprobs)
            return done.seconds, len(done.token_ids)

        decode(None)  # fills the prefix cache
        plain, asked = [], []
        for index in range(args.requests):  # each first in turn: neither always follows the other
            for logprobs in ((None, args.top) if index % 2 == 0 else (args.top, None)):
                (plain if logprobs is None else asked).append(decode(logprobs))
        tokens = plain[0][1]
        without = statistics.median(s for s, _ in plain) * 1000
        with_ = statistics.median(s for s, _ in asked) * 1000
        print(f"  {strategy.value:<13} {tokens:3d} tokens: without {without:7.1f} ms, with {with_:7.1f} ms, "
              f"difference {with_ - without:+7.1f} ms ({(with_ - without) / tokens:+.2f} ms a token); load {_load()}")
    logits = torch.randn(1, loaded.vocab_size)
    for top in sorted({0, args.top, 20}):
        timings = []
        for _ in range(200):
            started = time.perf_counter()
            scored(logits[0], 7, top)
            timings.append(time.perf_counter() - started)
        print(f"  scoring alone, top_logprobs {top:2d}: {statistics.median(timings) * 1e6:6.0f} µs a token")


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
