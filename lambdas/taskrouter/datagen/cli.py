"""`taskrouter data generate`: synthetic labelled conversations from an LLM (any OpenAI-compatible
server: `OPENAI_API_KEY`, `OPENAI_BASE_URL`).

    taskrouter data generate --out FILE.jsonl [--tasks FILE] [--per-scenario N]
                             [--scenarios start,continue,switch,end,none] [--seed S] [--model M]
                             [--concurrency N] [--no-progress]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskrouter.core.task_spec import load_task_file
from taskrouter.core.validation import describe
from taskrouter.evaluation.cli import positive_int
from taskrouter.repository import DEFAULT_TASKS_FILE


def main(argv: list[str]) -> int:
    if argv[:1] != ["generate"]:
        print("taskrouter data: the command is `taskrouter data generate ...`", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv[1:])
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    from taskrouter.datagen.generate import SCENARIOS, generate, plans, write_jsonl

    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown or not scenarios:
        print(f"taskrouter data generate: --scenarios takes {', '.join(SCENARIOS)}; not {unknown}", file=sys.stderr)
        return 1
    try:
        tasks = load_task_file(Path(args.tasks), updated_at="")
    except (OSError, ValueError, ValidationError) as error:
        message = describe(error) if isinstance(error, ValidationError) else str(error)
        print(f"taskrouter data generate: {args.tasks}: {message}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"taskrouter data generate: {out.parent} is not a folder", file=sys.stderr)
        return 1
    todo = plans(tasks, scenarios, args.per_scenario, args.seed)
    import openai

    try:
        client = openai.OpenAI(max_retries=2)
    except openai.OpenAIError as error:  # no key
        print(f"taskrouter data generate: {error}", file=sys.stderr)
        return 1

    def complete(messages: list[dict[str, str]], schema: dict[str, Any], seed: int) -> str | None:
        completion = client.chat.completions.create(
            model=args.model,
            messages=messages,  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": {"name": "conversation", "strict": True, "schema": schema}},
            temperature=args.temperature,
            seed=seed,
            timeout=60,
        )
        return completion.choices[0].message.content if completion.choices else None

    from taskrouter.evaluation.progress import progress_bar

    with progress_bar(len(todo), "writing conversations", enabled=not args.no_progress) as advance:
        outcome = generate(todo, tasks, complete, concurrency=args.concurrency, on_done=advance)
    write_jsonl(outcome.kept, out)
    print(
        f"{len(outcome.kept)} conversations written to {out}; {outcome.near_duplicates} near-duplicates "
        f"and {outcome.unusable} answers off the plan dropped"
    )
    if outcome.failed:
        print(f"taskrouter data generate: {outcome.failed} plans failed, first: {outcome.first_error}", file=sys.stderr)
    return 1 if outcome.failed and not outcome.kept else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter data generate", description="synthetic labelled conversations")
    parser.add_argument("--out", required=True, help="the JSONL dataset to write")
    parser.add_argument("--tasks", default=str(DEFAULT_TASKS_FILE), help="the task file the conversations are about")
    parser.add_argument("--per-scenario", type=positive_int, default=10, help="conversations planned per scenario")
    parser.add_argument("--scenarios", default="start,continue,switch,end,none")
    parser.add_argument("--seed", type=int, default=0, help="the same seed, tasks and model give the same plans")
    parser.add_argument("--model", default="gpt-4.1-mini")
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--concurrency", type=positive_int, default=4, help="requests to the model in flight at once")
    parser.add_argument("--no-progress", action="store_true")
    return parser
