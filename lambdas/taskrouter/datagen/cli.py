"""`taskrouter data generate`: synthetic labelled conversations from an LLM (any OpenAI-compatible
server: `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `TASKROUTER_OPENAI_RESPONSE_FORMAT`); docs/data.md tells
how, and what each option does.

    taskrouter data generate --out FILE.jsonl|- [--force] [--tasks FILE] [--per-scenario N]
                             [--scenarios start,continue,switch,end,none] [--seed S] [--model M]
                             [--temperature T] [--concurrency N] [--request-timeout S]
                             [--deadline S] [--no-progress]
    taskrouter data harvest ...   (taskrouter/datagen/harvest_command.py: captured turns as a dataset)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskrouter.adapters.settings import SettingsError, openai_response_format_from_env
from taskrouter.adapters.structured_output import ResponseFormatField, StructuredOutput
from taskrouter.core.task_spec import parse_task_file
from taskrouter.core.tasks import Task
from taskrouter.core.validation import describe
from taskrouter.datagen.destination import Destination, DestinationError
from taskrouter.datagen.generate import SCENARIOS, Outcome, Plan, as_jsonl, generate, plans
from taskrouter.arguments import OneLineParser, positive_int
from taskrouter.repository import DEFAULT_TASKS_FILE

_PROG = "taskrouter data generate"


class _Refused(Exception):
    """Why the run stops, or wrote nothing: one line, naming the flag or file and the fix."""


def main(argv: list[str]) -> int:
    if argv[:1] == ["harvest"]:
        from taskrouter.datagen.harvest_command import main as harvest_main

        return harvest_main(argv[1:])
    if argv[:1] != ["generate"]:
        print("taskrouter data: the command is `taskrouter data generate ...` or `taskrouter data harvest ...`",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        args = _parser().parse_args(argv[1:])
    except SystemExit as done:  # --help (0), or a usage error already told on one line (2)
        return done.code if isinstance(done.code, int) else 0
    try:
        return _run(args)
    except (_Refused, DestinationError) as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted: nothing written", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    tasks = _tasks(Path(args.tasks))
    destination = Destination.check(args.out, force=args.force)  # before the first request, not after the last
    todo = plans(tasks, args.scenarios, args.per_scenario, args.seed)
    outcome = asyncio.run(_ask_the_model(todo, tasks, args))
    if outcome.failed:
        print(f"{_PROG}: {outcome.failed} plans failed, first: {outcome.first_error}", file=sys.stderr)
    if outcome.timed_out:
        print(
            f"{_PROG}: {outcome.timed_out} requests got no whole answer within --request-timeout "
            f"{args.request_timeout:g} s; raise it for a slow server",
            file=sys.stderr,
        )
    if outcome.unfinished:
        print(
            f"{_PROG}: --deadline {args.deadline:g} s reached with {outcome.unfinished} of {len(todo)} plans "
            "unfinished; raise it to finish them",
            file=sys.stderr,
        )
    if not outcome.kept:
        raise _Refused(f"no conversation kept: nothing written to {destination}")
    destination.write(as_jsonl(outcome.kept))
    print(
        f"{len(outcome.kept)} conversations written to {destination}; {outcome.near_duplicates} near-duplicates "
        f"and {outcome.unusable} answers off the plan dropped",
        file=sys.stderr if destination.path is None else sys.stdout,  # standard output holds the data
    )
    return 1 if outcome.unfinished else 0  # a short dataset is written, and told to a script too


async def _ask_the_model(todo: Sequence[Plan], tasks: Sequence[Task], args: argparse.Namespace) -> Outcome:
    import openai

    from taskrouter.evaluation.progress import progress_bar

    try:
        structured_output = StructuredOutput(openai_response_format_from_env())
    except SettingsError as error:
        raise _Refused(str(error)) from None
    try:
        client = openai.AsyncOpenAI(max_retries=2)
    except openai.OpenAIError as error:  # no key
        raise _Refused(str(error)) from None

    async def complete(messages: list[dict[str, str]], schema: dict[str, Any], seed: int) -> str | None:
        async def ask(response_format: ResponseFormatField) -> Any:
            return await client.chat.completions.create(
                model=args.model,
                messages=messages,  # type: ignore[arg-type]
                response_format=response_format,  # type: ignore[arg-type]
                temperature=args.temperature,
                seed=seed,
                timeout=args.request_timeout,  # per read only: `generate` bounds the whole request
            )

        completion = await structured_output.acreate(ask, "conversation", schema)
        return completion.choices[0].message.content if completion.choices else None

    async with client:
        with progress_bar(len(todo), "writing conversations", enabled=not args.no_progress) as advance:
            return await generate(
                todo, tasks, complete, request_timeout_s=args.request_timeout, deadline_s=args.deadline,
                concurrency=args.concurrency, on_done=advance,
            )  # fmt: skip


def _tasks(path: Path) -> list[Task]:
    """The task file's tasks: at least one, since every plan but `none` asks for one."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise _Refused(f"--tasks {path}: {error.strerror or error}") from None
    if not raw.strip():
        raise _Refused(f'--tasks {path} is empty: give a task file, {{"tasks": [...]}} as {DEFAULT_TASKS_FILE.name}')
    try:
        tasks = parse_task_file(raw, str(path), updated_at="")
    except ValidationError as error:
        raise _Refused(f"--tasks {path}: {describe(error)}") from None
    except ValueError as error:  # repeated names
        raise _Refused(f"--tasks {error}") from None
    if not tasks:
        raise _Refused(f"--tasks {path} has no tasks: give a file with at least one")
    return tasks


def _scenarios(value: str) -> list[str]:
    chosen = [s.strip() for s in value.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"takes some of {','.join(SCENARIOS)}; not {value!r}")
    return chosen


def _number(value: str, *, positive: bool) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise argparse.ArgumentTypeError(f"takes a finite number {'> 0' if positive else '>= 0'}, not {value!r}")
    return number


def _non_negative(value: str) -> float:
    return _number(value, positive=False)


def _seconds(value: str) -> float:
    return _number(value, positive=True)


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=_PROG, description="synthetic labelled conversations (docs/data.md)")
    parser.add_argument("--out", required=True, metavar="FILE|-", help="the JSONL dataset to write (-: standard output)")
    parser.add_argument("--force", action="store_true", help="replace --out when it exists (refused otherwise)")
    parser.add_argument("--tasks", default=str(DEFAULT_TASKS_FILE), help="the task file the conversations are about")
    parser.add_argument("--per-scenario", type=positive_int, default=10, help="conversations planned per scenario")
    parser.add_argument("--scenarios", type=_scenarios, default=list(SCENARIOS), help=f"some of {','.join(SCENARIOS)}")
    parser.add_argument("--seed", type=int, default=0, help="the same seed, tasks and model give the same plans")
    parser.add_argument("--model", default="gpt-4.1-mini", help="the model the server is asked for")
    parser.add_argument("--temperature", type=_non_negative, default=0.9, help="the model's sampling temperature")
    parser.add_argument("--concurrency", type=positive_int, default=4, help="requests to the model in flight at once")
    parser.add_argument(
        "--request-timeout", type=_seconds, default=60.0, metavar="SECONDS",
        help="the most one request may take, its answer read in full and its retries included (default 60)",
    )  # fmt: skip
    parser.add_argument(
        "--deadline", type=_seconds, metavar="SECONDS",
        help="the most the whole run may take; then what was kept is written, and the exit status is 1",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser
