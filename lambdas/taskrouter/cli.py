"""`taskrouter`: the command line of the client.

    taskrouter [--stage S --region R | --base-url URL] [--api-key K] route "user text" [--current-task T]
    taskrouter ... tasks list | get NAME | put NAME --description D [--example E]... [--if-match V | --create-only]
    taskrouter ... tasks delete NAME [--if-match V] | import FILE [--dry-run] [--prune] | export FILE
    taskrouter eval ... | eval compare ...   (taskrouter/evaluation/cli.py)
    taskrouter data generate ...            (taskrouter/datagen/cli.py)
    taskrouter review FILE ...              (taskrouter/review/server.py)
    taskrouter adapter train ...            (taskrouter/training/cli.py)
    taskrouter ops mode show|set ...        (taskrouter/operations/cli.py)

An error is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskrouter.client import TaskRouterClient, TaskRouterError
from taskrouter.core.request import Strategy
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.tasks import Task
from taskrouter.core.validation import describe


@dataclass(frozen=True)
class Change:
    action: str  # "create", "update" or "delete"
    task: Task | None
    name: str
    version: int | None  # the version the change expects (If-Match), for updates and deletes


def plan_import(current: list[dict[str, Any]], wanted: list[Task], *, prune: bool) -> list[Change]:
    """What makes the registry hold the file's tasks: creations, updates of tasks that differ, and
    (only with `prune`) deletions of tasks the file does not name. Nothing when they already agree."""
    stored = {task["name"]: task for task in current}
    changes = []
    for task in wanted:
        existing = stored.get(task.name)
        if existing is None:
            changes.append(Change("create", task, task.name, None))
        elif (existing["description"], list(existing["examples"])) != (task.description, list(task.examples)):
            changes.append(Change("update", task, task.name, existing["version"]))
    if prune:
        names = {task.name for task in wanted}
        changes += [Change("delete", None, name, task["version"]) for name, task in stored.items() if name not in names]
    return changes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:  # the evaluation and data tools have command lines of their own
        from taskrouter.evaluation.cli import main as evaluation_main

        return evaluation_main(argv[1:])
    if argv[:1] == ["data"]:
        from taskrouter.datagen.cli import main as data_main

        return data_main(argv[1:])
    if argv[:1] == ["review"]:
        from taskrouter.review.server import main as review_main

        return review_main(argv[1:])
    if argv[:1] == ["ops"]:
        from taskrouter.operations.cli import main as ops_main

        return ops_main(argv[1:])
    if argv[:1] == ["adapter"]:
        from taskrouter.training.cli import main as adapter_main

        return adapter_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        client = TaskRouterClient(
            stage=args.stage,
            region=args.region,
            api_key=args.api_key,
            base_url=None if args.stage else args.base_url,  # a named stage wins over TASKROUTER_URL
        )
        return args.run(client, args)
    except (TaskRouterError, ValueError, OSError) as error:
        print(f"taskrouter: {error}", file=sys.stderr)
    except Exception as error:  # botocore's errors (no credentials, no such stack) among them
        print(f"taskrouter: {type(error).__name__}: {error}", file=sys.stderr)
    return 1


def _route(client: TaskRouterClient, args: argparse.Namespace) -> int:
    conversation = [{"role": "user", "content": text} for text in args.text]
    _print(client.route(conversation, args.current_task, tasks=args.tasks, strategy=args.strategy))
    return 0


def _list(client: TaskRouterClient, args: argparse.Namespace) -> int:
    _print({"tasks": client.tasks.list()})
    return 0


def _get(client: TaskRouterClient, args: argparse.Namespace) -> int:
    _print(client.tasks.get(args.name))
    return 0


def _put(client: TaskRouterClient, args: argparse.Namespace) -> int:
    _print(client.tasks.put(args.name, args.description, args.example, if_match=args.if_match, create_only=args.create_only))
    return 0


def _delete(client: TaskRouterClient, args: argparse.Namespace) -> int:
    client.tasks.delete(args.name, if_match=args.if_match)
    return 0


def _import(client: TaskRouterClient, args: argparse.Namespace) -> int:
    try:
        wanted = load_task_file(Path(args.file), updated_at="")
    except ValidationError as error:
        raise ValueError(f"{args.file}: {describe(error)}") from None
    changes = plan_import(client.tasks.list(), wanted, prune=args.prune)
    for change in changes:
        print(f"{'would ' if args.dry_run else ''}{change.action} {change.name}")
        if args.dry_run:
            continue
        if change.task is None:
            client.tasks.delete(change.name, if_match=change.version)
        else:  # a creation never overwrites a task someone else created meanwhile
            client.tasks.put(
                change.name, change.task.description, list(change.task.examples),
                if_match=change.version, create_only=change.action == "create",
            )
    if not changes:
        print("nothing to change")
    return 0


def _export(client: TaskRouterClient, args: argparse.Namespace) -> int:
    tasks = [{"name": t["name"], "description": t["description"], "examples": t["examples"]} for t in client.tasks.list()]
    Path(args.file).write_text(json.dumps({"tasks": tasks}, indent=2, ensure_ascii=False) + "\n")
    print(f"exported {len(tasks)} tasks to {args.file} at {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    return 0


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter", description="TaskRouter's client")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--stage", help="a deployed stage: its API is found from the stage's stack outputs")
    target.add_argument("--base-url", default=os.environ.get("TASKROUTER_URL"), help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--region", default=None)
    parser.add_argument("--api-key", default=os.environ.get("TASKROUTER_API_KEY"))
    commands = parser.add_subparsers(dest="command", required=True)

    route = commands.add_parser("route", help="route a conversation of user messages")
    route.add_argument("text", nargs="+", help="the user's messages, oldest first")
    route.add_argument("--current-task")
    route.add_argument("--tasks", nargs="*")
    route.add_argument("--strategy", choices=[strategy.value for strategy in Strategy])
    route.set_defaults(run=_route)

    tasks = commands.add_parser("tasks", help="the task registry").add_subparsers(dest="action", required=True)
    tasks.add_parser("list").set_defaults(run=_list)
    get = tasks.add_parser("get")
    get.add_argument("name")
    get.set_defaults(run=_get)
    put = tasks.add_parser("put")
    put.add_argument("name")
    put.add_argument("--description", required=True)
    put.add_argument("--example", action="append", default=[])
    put.add_argument("--if-match", type=int, help="write only over this version")
    put.add_argument("--create-only", action="store_true", help="write only if the task does not exist")
    put.set_defaults(run=_put)
    delete = tasks.add_parser("delete")
    delete.add_argument("name")
    delete.add_argument("--if-match", type=int)
    delete.set_defaults(run=_delete)
    import_ = tasks.add_parser("import", help="make the registry hold a task file's tasks")
    import_.add_argument("file")
    import_.add_argument("--dry-run", action="store_true", help="print the differences, change nothing")
    import_.add_argument("--prune", action="store_true", help="also delete tasks the file does not name")
    import_.set_defaults(run=_import)
    export = tasks.add_parser("export", help="write the registry's tasks to a task file")
    export.add_argument("file")
    export.set_defaults(run=_export)
    return parser


if __name__ == "__main__":
    sys.exit(main())
