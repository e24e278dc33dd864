"""`taskrouter`: the command line of the client.

    taskrouter [--stage S [--region R] | --base-url URL] [--api-key K] route "user text"... [--current-task T]
    taskrouter ... route --conversation FILE|-   (a list of {role, content} messages, or a whole /route body)
    taskrouter ... tasks list | get NAME | put NAME --description D [--example E]... [--if-match V | --create-only]
    taskrouter ... tasks delete NAME [--if-match V] | import FILE|- [--dry-run] [--prune] | export FILE|-
    taskrouter eval ... | eval compare ...   (taskrouter/evaluation/cli.py)
    taskrouter data generate ...            (taskrouter/datagen/cli.py)
    taskrouter review FILE ...              (taskrouter/review/server.py)
    taskrouter adapter train ...            (taskrouter/training/cli.py)
    taskrouter ops mode show|set ...        (taskrouter/operations/cli.py)
    taskrouter doctor --stage S ...         (taskrouter/doctor/cli.py)

The options naming the API (--stage, --region, --base-url, --api-key) may come before or after the
command; TASKROUTER_URL and TASKROUTER_API_KEY stand in for --base-url and --api-key. `-` is standard
input or output wherever a file is taken. An error is one line on stderr, naming the flag or the
file (line and column) to fix, and a non-zero exit (2: the command line itself).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskrouter.adapters.settings import catalogue_budget_from_env
from taskrouter.arguments import OneLineParser
from taskrouter.client import API_STACK, TaskRouterClient, TaskRouterError, has_http_scheme
from taskrouter.core.catalogue import CatalogueBudget, catalogue_bytes, check_write
from taskrouter.core.request import Strategy
from taskrouter.core.task_spec import parse_task_file
from taskrouter.core.tasks import Task
from taskrouter.core.validation import describe
from taskrouter.extras import MissingExtra, missing_extra, require
from taskrouter.repository import set_serving_defaults

STDIO = "-"  # standard input or output, wherever a file is taken
STAGES_FILE = "infra/stages.toml"  # under the repository's root: each stage's region
ROUTE_FIELDS = ("conversation", "current_task", "tasks", "strategy")  # a /route body's (docs/api.md)
CREDENTIALS_FIX = "set AWS_PROFILE (a profile of ~/.aws/config) or run `aws configure`"


class CliError(Exception):
    """A mistake the user can fix; its message says how (one line)."""


@dataclass(frozen=True)
class Target:
    """The API the command talks to, and where each part of it came from (for the errors' hints)."""

    stage: str | None = None
    region: str | None = None
    region_source: str | None = None  # "--region", STAGES_FILE, or None (boto3's default)
    base_url: str | None = None
    url_source: str | None = None  # "--base-url" or "TASKROUTER_URL" (None with a stage)
    api_key: str | None = None
    key_source: str | None = None  # "--api-key" or "TASKROUTER_API_KEY"; None: none given

    @property
    def stack(self) -> str:
        return API_STACK.format(stage=self.stage)


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


def _tool(module: str, extra: str | None = None) -> Callable[[], Callable[[list[str]], int]]:
    """A tool's `main`, imported only when its command runs, once its extra is known to be there."""

    def load() -> Callable[[list[str]], int]:
        if extra is not None:
            require(extra)
        return importlib.import_module(module).main

    return load


# `adapter` checks its own extras per command (train: training; launch: launch).
_TOOLS = {
    "eval": _tool("taskrouter.evaluation.cli", "tools"),
    "data": _tool("taskrouter.datagen.cli"),
    "review": _tool("taskrouter.review.server"),
    "ops": _tool("taskrouter.operations.cli"),
    "adapter": _tool("taskrouter.training.cli"),
    "doctor": _tool("taskrouter.doctor.cli"),
    "model": _tool("taskrouter.model_server.cli", "local-model"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:  # every tool bounds the task catalogue as a deployed stage does (or as make local's model)
        set_serving_defaults()
    except (ValueError, OSError, ImportError) as error:
        said = missing_extra(error) if isinstance(error, ImportError) else str(error)
        print(f"taskrouter: TASKROUTER_LOCAL_MODEL: {said or error}", file=sys.stderr)
        return 1
    if argv[:1] and argv[0] in _TOOLS:  # the tools have command lines of their own
        try:
            return _TOOLS[argv[0]]()(argv[1:])
        except MissingExtra as missing:
            message = str(missing)
        except ImportError as error:
            message = missing_extra(error)
            if message is None:
                raise
        print(f"taskrouter {argv[0]}: {message}", file=sys.stderr)
        return 1
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help (0), or a usage error already printed on one line (2)
        return done.code if isinstance(done.code, int) else 0
    target = client = None
    try:
        target = _target(args, os.environ)
        args.input = args.read(args) if "read" in args else None  # a bad file is told before any AWS call
        client = _connect(target)
        return args.run(client, args)
    except CliError as error:
        message = str(error)
    except TaskRouterError as error:
        message = _explain(error, target, client)
    except (ValueError, OSError) as error:
        message = str(error)
    except Exception as error:  # botocore's errors (no credentials, no region, no such stack) among them
        message = _explain_aws(error, target)
    print(f"taskrouter: {message}", file=sys.stderr)
    return 1


# -- where the API is ------------------------------------------------------------------------------
def _target(args: argparse.Namespace, environ: Mapping[str, str]) -> Target:
    """The flags first, then the environment; a named stage wins over TASKROUTER_URL."""
    if args.api_key:
        key, key_source = args.api_key, "--api-key"
    elif environ.get("TASKROUTER_API_KEY"):
        key, key_source = environ["TASKROUTER_API_KEY"], "TASKROUTER_API_KEY"
    else:
        key, key_source = None, None
    if args.stage is not None:
        if args.base_url is not None:
            raise CliError("give --stage (a deployed stage) or --base-url (a server's URL), not both")
        if args.region:
            region, region_source = args.region, "--region"
        else:
            region = stage_region(args.stage)
            region_source = STAGES_FILE if region else None
        return Target(args.stage, region, region_source, api_key=key, key_source=key_source)
    if args.base_url is not None:
        url, url_source = args.base_url, "--base-url"
    elif environ.get("TASKROUTER_URL"):
        url, url_source = environ["TASKROUTER_URL"], "TASKROUTER_URL"
    else:
        raise CliError(
            "no API to talk to: give --base-url URL or set TASKROUTER_URL (e.g. http://127.0.0.1:8080 for "
            "`make local`), or give --stage STAGE for a deployed stage"
        )
    if not has_http_scheme(url):
        example = f"http://{url.split('://', 1)[-1]}"
        shown = f"--base-url {example}" if url_source == "--base-url" else f"TASKROUTER_URL={example}"
        raise CliError(f"{url_source} {url!r} has no http:// or https:// scheme: add it, e.g. {shown}")
    return Target(base_url=url, url_source=url_source, api_key=key, key_source=key_source)


def stage_region(stage: str) -> str | None:
    """The stage's region from infra/stages.toml when run from the repository (None otherwise)."""
    import tomllib

    from taskrouter.repository import ROOT

    try:
        return tomllib.loads((ROOT / STAGES_FILE).read_text())[stage]["region"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None


def _stages() -> list[str] | None:
    """The stages infra/stages.toml names, or None when it cannot be read."""
    import tomllib

    from taskrouter.repository import ROOT

    try:
        return sorted(name for name, table in tomllib.loads((ROOT / STAGES_FILE).read_text()).items() if isinstance(table, dict))
    except (OSError, tomllib.TOMLDecodeError):
        return None


def _connect(target: Target) -> TaskRouterClient:
    if target.stage is None:
        return TaskRouterClient(base_url=target.base_url, api_key=target.api_key)
    return TaskRouterClient(stage=target.stage, region=target.region, api_key=target.api_key)


# -- errors, each with its fix -------------------------------------------------------------------
def _explain(error: TaskRouterError, target: Target | None, client: TaskRouterClient | None) -> str:
    """The API's answer (its status and code, none when no answer came), then what to do about it."""
    text = error.message if error.status == 0 else f"{error.status} {error.code}: {error.message}"
    hint = _hint(error, target, client.api_key_id if client is not None else None) if target is not None else None
    return f"{text}: {hint}" if hint else text


def _hint(error: TaskRouterError, target: Target, key_id: str | None) -> str | None:
    stage = target.stage
    if error.code == "unreachable":
        if stage is not None:
            return f"is stage {stage!r} deployed, and its API URL (output ApiUrl of stack {target.stack}) reachable from here?"
        return f"is it running (`make local`)? Check the URL and port of {target.url_source}"
    if error.code == "no_credentials":
        return CREDENTIALS_FIX
    if error.status not in (401, 403):
        return None
    if stage is not None and error.method in ("PUT", "DELETE"):
        return (f"/tasks writes are signed with your AWS credentials (AWS_PROFILE): your identity needs "
                f"execute-api:Invoke on the output TasksWriteArn of stack {target.stack}")
    if target.key_source is None and stage is not None:
        return (f"the API key of stage {stage!r} (API Gateway key {key_id}, the output ApiKeyId of stack "
                f"{target.stack}) was refused: check that it is enabled and in the stage's usage plan, or give one "
                "with --api-key KEY or TASKROUTER_API_KEY")
    if target.key_source is None:
        return ("the server wants an API key: give --api-key KEY or set TASKROUTER_API_KEY (`make local` checks the "
                "TASKROUTER_API_KEY it was started with)")
    given = "given by --api-key" if target.key_source == "--api-key" else f"in {target.key_source}"
    return f"the API key {given} was refused: give the right one with --api-key KEY or TASKROUTER_API_KEY"


def _explain_aws(error: Exception, target: Target | None) -> str:
    """botocore's errors on the way to a stage, as what to do."""
    try:
        from botocore import exceptions as aws
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return f"{type(error).__name__}: {error}"
    stage = target.stage if target is not None else None
    if isinstance(error, (aws.NoCredentialsError, aws.PartialCredentialsError)):
        return f"no AWS credentials to find stage {stage!r} with: {CREDENTIALS_FIX}"
    if isinstance(error, aws.ProfileNotFound):
        return f"{error}: set AWS_PROFILE to a profile of ~/.aws/config, or run `aws configure --profile NAME`"
    if isinstance(error, aws.NoRegionError):
        stages = _stages()
        if stages is None:
            why = f"{STAGES_FILE}, which names each stage's region, is read only when run from the repository"
        else:
            why = f"{STAGES_FILE} has no stage {stage!r} (it has {', '.join(stages) or 'none'})"
        return f"no AWS region for stage {stage!r}: give --region REGION; {why}"
    if isinstance(error, aws.TokenRetrievalError) or isinstance(error, aws.SSOError):
        return f"{error}: renew your credentials (`aws sso login`) or {CREDENTIALS_FIX}"
    if isinstance(error, aws.EndpointConnectionError):
        return f"{error}: check your network and the region ({_region_of(target)})"
    if isinstance(error, aws.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if "does not exist" in str(error) and target is not None:
            return (f"stack {target.stack} was not found in {_region_of(target)}: is stage {stage!r} deployed "
                    f"(`npx cdk deploy '{stage}/*'`)? Else give its region with --region")
        if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
            return f"{error}: renew your AWS credentials (`aws sso login`, or {CREDENTIALS_FIX})"
        if code in ("InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"):
            return f"{error}: your AWS credentials were refused: {CREDENTIALS_FIX}"
        if code in ("AccessDenied", "AccessDeniedException"):
            return f"{error}: your AWS identity needs cloudformation:DescribeStacks and apigateway:GET on stage {stage!r}"
        return str(error)
    if isinstance(error, KeyError) and error.args[:1] in (("ApiUrl",), ("ApiKeyId",)) and target is not None:
        return f"stack {target.stack} has no output {error}: deploy the stage again (`npx cdk deploy '{stage}/*'`)"
    if isinstance(error, aws.BotoCoreError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _region_of(target: Target | None) -> str:
    if target is None or target.region is None:
        return "the region of AWS_REGION or your profile"
    return f"{target.region}, from {target.region_source}"


# -- files (`-`: standard input or output) --------------------------------------------------------
def _shown(name: str) -> str:
    return "<stdin>" if name == STDIO else name


def _read_json(name: str) -> tuple[Any, bytes]:
    """A JSON file's value and bytes (`-`: standard input); a syntax error names file, line and column."""
    try:
        raw = _stdin_bytes() if name == STDIO else Path(name).read_bytes()
    except OSError as error:
        raise CliError(f"{name}: cannot read it: {error.strerror or error}") from None
    try:
        return json.loads(raw), raw
    except json.JSONDecodeError as error:
        raise CliError(f"{_shown(name)}:{error.lineno}:{error.colno}: malformed JSON: {error.msg}") from None
    except UnicodeDecodeError:
        raise CliError(f"{_shown(name)}: not UTF-8 text") from None


def _stdin_bytes() -> bytes:
    buffer = getattr(sys.stdin, "buffer", None)
    return buffer.read() if buffer is not None else sys.stdin.read().encode()


def load_tasks(name: str) -> list[Task]:
    """A task file's tasks (`-`: standard input), checked as `load_task_file` checks them; an error
    names the file and the line and column (bad JSON) or the field (a rule broken)."""
    _, raw = _read_json(name)
    try:
        return parse_task_file(raw, _shown(name), updated_at="")
    except ValidationError as error:
        raise CliError(f"{_shown(name)}: {describe(error)}") from None
    except ValueError as error:  # repeated names
        raise CliError(str(error)) from None


# -- commands ------------------------------------------------------------------------------------
def _route(client: TaskRouterClient, args: argparse.Namespace) -> int:
    conversation, body = args.input
    current_task = args.current_task if args.current_task is not None else body.get("current_task")
    tasks = args.tasks if args.tasks is not None else body.get("tasks")
    strategy = args.strategy if args.strategy is not None else body.get("strategy")
    _print(client.route(conversation, current_task, tasks=tasks, strategy=strategy))
    return 0


def _conversation(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The conversation, and the rest of a /route body when the file holds one."""
    if args.conversation is None:
        if not args.text:
            raise CliError('give the user\'s message (taskrouter route "TEXT"...) or --conversation FILE|-')
        return [{"role": "user", "content": text} for text in args.text], {}
    if args.text:
        raise CliError("give the user's messages as text or --conversation FILE|-, not both "
                       "(add the new message to the file's conversation)")
    value, _ = _read_json(args.conversation)
    where = _shown(args.conversation)
    if isinstance(value, list):
        return value, {}
    if not isinstance(value, dict):
        raise CliError(f"{where}: expected a list of {{role, content}} messages or a /route body "
                       f"{{conversation, current_task?, tasks?, strategy?}}, not a JSON {type(value).__name__}")
    unknown = sorted(set(value) - set(ROUTE_FIELDS))
    if unknown:
        raise CliError(f"{where}: unknown field {unknown[0]!r}: a /route body holds {', '.join(ROUTE_FIELDS)}")
    if "conversation" not in value:
        raise CliError(f"{where}: the /route body has no conversation")
    return value["conversation"], value


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
    wanted = args.input
    current = client.tasks.list()
    changes = plan_import(current, wanted, prune=args.prune)
    budget = catalogue_budget_from_env()
    _check_catalogue(current, changes, args.file, budget)
    for change in _in_catalogue_order(current, changes, budget):
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


def _as_task(stored: Mapping[str, Any]) -> Task:
    return Task(stored["name"], stored["description"], tuple(stored["examples"]))


def _check_catalogue(
    current: list[dict[str, Any]], changes: list[Change], source: str, budget: CatalogueBudget | None
) -> None:
    """The whole import against the catalogue budget, before its first write: the registry would
    refuse the write that takes it past the budget, leaving the import half done."""
    if budget is None:
        return
    written = [change.task for change in changes if change.task is not None]
    removed = [change.name for change in changes if change.task is None]
    check = check_write(map(_as_task, current), written, removed, budget)
    if check.refused:
        name = "standard input" if source == STDIO else source
        raise CliError(f"{name}: {check.message}: nothing imported (shorten or remove tasks, or add --prune)")


def _in_catalogue_order(
    current: list[dict[str, Any]], changes: list[Change], budget: CatalogueBudget | None
) -> list[Change]:
    """Deletions first, then the changes that shrink the catalogue, then those that grow it (as the
    budget measures it): no write on the way takes the catalogue past the size it ends at."""
    stored = {task["name"]: _as_task(task) for task in current}
    size = catalogue_bytes if budget is None else budget.size

    def growth(change: Change) -> int:
        if change.task is None:
            return -size([stored[change.name]])
        before = size([stored[change.name]]) if change.name in stored else 0
        return size([change.task]) - before

    return sorted(changes, key=lambda change: (change.task is not None, growth(change) > 0))


def _export(client: TaskRouterClient, args: argparse.Namespace) -> int:
    tasks = [{"name": t["name"], "description": t["description"], "examples": t["examples"]} for t in client.tasks.list()]
    text = json.dumps({"tasks": tasks}, indent=2, ensure_ascii=False) + "\n"
    if args.file == STDIO:  # the task file itself, and nothing else, on standard output
        sys.stdout.write(text)
        return 0
    Path(args.file).write_text(text)
    print(f"exported {len(tasks)} tasks to {args.file} at {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    return 0


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# -- the command line ------------------------------------------------------------------------------
ENVIRONMENT = """\
environment:
  TASKROUTER_URL      the API's base URL when neither --base-url nor --stage is given
  TASKROUTER_API_KEY  the API key (header x-api-key) when --api-key is not given
  AWS_PROFILE         the AWS credentials --stage uses (or those of `aws configure`, or
                      AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); /tasks writes to a stage are
                      signed with them
  AWS_REGION          a stage's region when neither --region nor infra/stages.toml gives one
"""

EPILOG = ENVIRONMENT + """
examples (`make local` running in another terminal, or a deployed stage):
  taskrouter --base-url http://127.0.0.1:8080 route "write up the minutes of my call"
  taskrouter route --conversation chat.json --current-task follow_up_email
  taskrouter --stage dev tasks list
  taskrouter tasks export - > tasks.json;  taskrouter tasks import - --dry-run < tasks.json

other commands, each with its own --help:
  taskrouter eval, eval compare     replay a labelled dataset through a router, compare runs
  taskrouter data generate          synthetic labelled conversations
  taskrouter review FILE            review a labelled dataset in a browser
  taskrouter adapter train, launch  train a routing LoRA adapter (here, or as a SageMaker job)
  taskrouter ops mode show, set     the operations mode of a deployed stage
"""

TASK_FILE = """\
a task file is JSON: {"tasks": [{"name": "follow_up_email", "description": "...", "examples": ["..."]}, ...]};
names match ^[a-z][a-z0-9_]{2,63}$, descriptions hold 1 to 500 characters, at most 10 examples of 300.
"""


def _api_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--stage, --region, --base-url, --api-key: on the top parser, and again (without defaults, so as
    not to hide the top's) on every command, so that they may be given before or after it."""
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("the API (these options may come before or after the command)")
    group.add_argument("--base-url", metavar="URL", default=default,
                       help="the API's base URL, with http:// or https://, e.g. http://127.0.0.1:8080 for "
                            "`make local` (default: TASKROUTER_URL)")
    group.add_argument("--stage", default=default,
                       help="a deployed stage of infra/stages.toml, e.g. dev: its API URL and API key are read from "
                            "the stack STAGE-Api with your AWS credentials (AWS_PROFILE or `aws configure`); "
                            "wins over TASKROUTER_URL")
    group.add_argument("--region", default=default,
                       help="the stage's AWS region (default: the stage's region in infra/stages.toml when run from "
                            "the repository, else AWS_REGION or your profile's)")
    group.add_argument("--api-key", metavar="KEY", default=default,
                       help="the API key, sent as x-api-key (default: TASKROUTER_API_KEY; with --stage, the stage's "
                            "own key, read from API Gateway)")


def _command(commands: Any, name: str, help_text: str, *, description: str | None = None, epilog: str = ENVIRONMENT,
             api: bool = True) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=textwrap.fill(description or help_text, 100), epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if api:
        _api_options(parser, top=False)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="taskrouter",
        description="TaskRouter's client: route a conversation, and manage the task registry, of `make local`\n"
                    "or of a deployed stage.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _api_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{route,tasks}",
                                     title="commands (each has its --help)")

    route = _command(commands, "route", "which task the user wants now: POST /route",
                     description="Which task the user wants now, and whether it starts, continues, switches or "
                                 "ends (POST /route). The conversation is the user's messages given as text, or "
                                 "a whole conversation from --conversation.",
                     epilog='--conversation FILE holds either a list of messages, oldest first:\n'
                            '  [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}, ...]\n'
                            'or a whole /route body:\n'
                            '  {"conversation": [...], "current_task": "...", "tasks": [...], "strategy": "..."}\n'
                            'whose fields the options --current-task, --tasks and --strategy override.\n\n'
                            + ENVIRONMENT)
    route.add_argument("text", nargs="*", help="the user's messages, oldest first (each one a user turn)")
    route.add_argument("--conversation", metavar="FILE|-",
                       help="a JSON file (-: standard input) holding the conversation, assistant turns included, "
                            "or a whole /route body")
    route.add_argument("--current-task", metavar="TASK", help="the task running now (default: none)")
    route.add_argument("--tasks", nargs="*", metavar="TASK",
                       help="choose only among these tasks (e.g. the user's enabled ones; default: all)")
    route.add_argument("--strategy", choices=[strategy.value for strategy in Strategy],
                       help="the prompt strategy (default: the server's, TASKROUTER_DEFAULT_STRATEGY locally)")
    route.set_defaults(run=_route, read=_conversation)

    tasks_parser = _command(commands, "tasks", "the task registry: list, get, put, delete, import, export",
                            description="The task registry (/tasks). Reads need the API key; on a stage, writes are "
                                        "signed with your AWS credentials.", api=False)
    tasks = tasks_parser.add_subparsers(dest="action", required=True, title="actions (each has its --help)",
                                        metavar="{list,get,put,delete,import,export}")
    _command(tasks, "list", "print every task, sorted by name").set_defaults(run=_list)
    get = _command(tasks, "get", "print one task")
    get.add_argument("name", help="the task's name")
    get.set_defaults(run=_get)
    put = _command(tasks, "put", "create or replace a task; prints it with its new version")
    put.add_argument("name", help="the task's name: ^[a-z][a-z0-9_]{2,63}$")
    put.add_argument("--description", required=True, help="what the task does, 1 to 500 characters")
    put.add_argument("--example", action="append", default=[], metavar="TEXT",
                     help="a user message that wants this task (repeat: at most 10, each up to 300 characters)")
    conditions = put.add_mutually_exclusive_group()
    conditions.add_argument("--if-match", type=int, metavar="VERSION",
                            help="write only over this version (`tasks get` shows it); else 409 version_conflict")
    conditions.add_argument("--create-only", action="store_true",
                            help="write only if the task does not exist; else 409 version_conflict")
    put.set_defaults(run=_put)
    delete = _command(tasks, "delete", "delete a task")
    delete.add_argument("name", help="the task's name")
    delete.add_argument("--if-match", type=int, metavar="VERSION",
                        help="delete only this version; else 409 version_conflict")
    delete.set_defaults(run=_delete)
    import_ = _command(tasks, "import", "make the registry hold a task file's tasks",
                       description="Make the registry hold a task file's tasks: create the missing ones, update "
                                   "those that differ (each only over the version read), and with --prune delete "
                                   "the others. Prints each change; running it again changes nothing.",
                       epilog=TASK_FILE + "\n" + ENVIRONMENT)
    import_.add_argument("file", metavar="FILE|-", help="the task file (-: standard input)")
    import_.add_argument("--dry-run", action="store_true", help="print the changes, make none")
    import_.add_argument("--prune", action="store_true", help="also delete the tasks the file does not name")
    import_.set_defaults(run=_import, read=lambda args: load_tasks(args.file))
    export = _command(tasks, "export", "write the registry's tasks as a task file",
                      epilog=TASK_FILE + "\n" + ENVIRONMENT)
    export.add_argument("file", metavar="FILE|-", help="the task file to write (-: standard output)")
    export.set_defaults(run=_export)
    return parser


if __name__ == "__main__":
    sys.exit(main())
