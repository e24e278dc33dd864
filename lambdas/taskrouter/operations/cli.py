"""`taskrouter ops mode show|set`: the router's operations mode and the alarm handling's state.

    taskrouter ops mode show --stage S [--region R]
    taskrouter ops mode set primary_first|openai_only --stage S --reason TEXT [--region R]
    taskrouter ops mode set auto --stage S [--region R]     (hand back to the alarm handling)
    taskrouter ops unseen --stage S [--region R]            (live tasks the serving adapter never saw)

A mode set by an operator is an override: the alarm handling records the alarm's changes but never
undoes it; `set auto` ends it, and the mode becomes what the alarm's last recorded state calls for (a
recorded alarm time later than now is dropped, so the handling's next tick follows the alarm's actual
state). Whatever the parameters hold, `show` shows it (a malformed one named, with its fix) and `set`
overwrites it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from datetime import datetime, timezone

from taskrouter.core.resilience import OpsMode
from taskrouter.operations.failover import MALFORMED, clear_override, set_override
from taskrouter.operations.store import MalformedParameter, Operations, Snapshot
from taskrouter.operations.unseen import ROUTER_FUNCTION_OUTPUT, NotTheRouter, unseen_tasks

AUTO = "auto"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
    except ImportError as error:  # pragma: no cover - boto3 is a runtime dependency
        print(f"taskrouter ops: {error}", file=sys.stderr)
        return 1
    from taskrouter.doctor.aws import Aws, CallFailed, Unanswered

    try:
        session = boto3.session.Session(region_name=args.region or _stage_region(args.stage))
        if args.command == "unseen":
            return _unseen(session, args.stage)
        # Through the doctor's calls: an endpoint that answers but not as AWS does (a proxy's page, a
        # wrong AWS_ENDPOINT_URL) is told as such, never a traceback nor "deploy the stage first".
        aws = Aws(session)
        outputs = _outputs(aws, f"{args.stage}-Operations")
        topic = _outputs(aws, f"{args.stage}-Monitoring").get("AlarmTopicArn") if args.action == "set" else None
        ops = Operations(
            ssm=aws.client("ssm"), sns=aws.client("sns") if topic else None,
            mode_parameter=outputs["OpsModeParameter"], state_parameter=outputs["FailoverStateParameter"],
            topic_arn=topic, stage=args.stage,
        )
        if args.action == "show":
            return _show(ops)
        return _set(ops, args)
    except CallFailed as error:
        fix = f". Fix: {error.fix}" if isinstance(error, Unanswered) else ""
        print(" ".join(f"taskrouter ops mode: could not be done: {error}{fix}".split()), file=sys.stderr)
        return 2
    except NoCredentialsError:
        print("taskrouter ops: no AWS credentials: set AWS_PROFILE or run `aws configure`", file=sys.stderr)
    except NoRegionError:
        print("taskrouter ops: no region: give --region", file=sys.stderr)
    except KeyError as missing:
        print(f"taskrouter ops: the stage's stacks have no output {missing}: deploy the stage first", file=sys.stderr)
    except (ClientError, BotoCoreError) as error:
        hint = " (is the stage deployed, in this region? `npx cdk deploy '<stage>/*'`)" if "does not exist" in str(error) else ""
        print(f"taskrouter ops: {error}{hint}", file=sys.stderr)
    return 1


def _show(ops: Operations) -> int:
    snapshot = _read(ops)
    state = snapshot.state
    shown = {
        "mode": snapshot.mode.value if snapshot.mode else None,
        "set_by": None, "override": None, "alarm_state": None, "alarm_changed_at": None, "pending_failback": None,
    }
    if state is not None:  # a malformed state: nothing read from it is shown as if it were true
        shown.update({
            "set_by": "operator" if state.override else "alarm handling",
            "override": state.override.__dict__ if state.override else None,
            "alarm_state": state.alarm_state,
            "alarm_changed_at": state.alarm_changed_at,
            # a fail-back the hold still keeps back (applied by the handler's schedule once due)
            "pending_failback": state.override is None and state.alarm_state == "OK" and state.mode == OpsMode.OPENAI_ONLY.value,
        })
    if snapshot.problems:
        shown["malformed"] = {problem.parameter: problem.why for problem in snapshot.problems}
    print(json.dumps(shown, indent=2))
    return 0


def _read(ops: Operations) -> Snapshot:
    """Both parameters; each malformed one told on stderr, one line with its fix."""
    snapshot = ops.read()
    for problem in snapshot.problems:
        print(f"taskrouter ops: {problem}: {_fix(ops, problem)}", file=sys.stderr)
    return snapshot


def _fix(ops: Operations, problem: MalformedParameter) -> str:
    if problem.parameter == ops.state_parameter:
        return ("the alarm handling rebuilds it within a minute, losing any override it held; or overwrite it: "
                f"`taskrouter ops mode set auto|primary_first|openai_only --stage {ops.stage}`")
    return f"the alarm handling rewrites it within a minute; or set it: `taskrouter ops mode set auto --stage {ops.stage}`"


def _set(ops: Operations, args: argparse.Namespace) -> int:
    if args.mode != AUTO and not args.reason:
        print("taskrouter ops mode set: give --reason (it is announced and kept with the override)", file=sys.stderr)
        return 2
    snapshot = _read(ops)
    now = time.time()
    state = snapshot.state_to_decide_from(now)  # a malformed one is overwritten
    if args.mode == AUTO:
        state, mode = clear_override(state, now)
        why = "override ended: the alarm handling decides again"
    else:
        mode = OpsMode(args.mode)
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        state = set_override(state, mode, args.by or getpass.getuser(), args.reason, at)
        why = f"operator override: {args.reason}"
    previous = snapshot.mode.value if snapshot.mode else MALFORMED
    # The override first: should the mode's write then fail, the handler already leaves the mode alone,
    # and the command can be run again. (The handler may write the state in between: the override is
    # re-read by it at its next event, the last writer's state wins; an operator acts rarely.)
    ops.save(state)
    ops.set_mode(mode)
    ops.announce(f"operations mode {mode.value} (operator)", {"from": previous, "to": mode.value, "why": why})
    print(f"{args.stage}: operations mode {previous} -> {mode.value} ({why})")
    return 0


def _unseen(session, stage: str) -> int:
    """Through the doctor's calls: an endpoint that answers but not as AWS does (a proxy's page, a wrong
    AWS_ENDPOINT_URL) is told as such, exit 2, as the doctor's `could not be checked`."""
    from taskrouter.doctor.aws import Aws, CallFailed, Unanswered
    from taskrouter.doctor.context import outputs

    aws = Aws(session)
    try:
        api = aws.call("cloudformation", "DescribeStacks", StackName=f"{stage}-Api")["Stacks"][0]
        found = unseen_tasks(aws.call, outputs(api)[ROUTER_FUNCTION_OUTPUT])
    except CallFailed as error:
        fix = f". Fix: {error.fix}" if isinstance(error, Unanswered) else ""
        print(" ".join(f"taskrouter ops unseen: could not be checked: {error}{fix}".split()), file=sys.stderr)
        return 2
    except NotTheRouter as error:
        print(f"taskrouter ops unseen: {error}: deploy the stage again (`npx cdk deploy '{stage}/*'`)", file=sys.stderr)
        return 1
    print(json.dumps({"adapter": found.adapter, "live_tasks": found.live, "unseen": list(found.tasks),
                      "adapter_tasks_known": found.known}, indent=2))
    print(f"{stage}: {found.describe()}", file=sys.stderr)
    return 0


def _outputs(aws, stack: str) -> dict[str, str]:
    from taskrouter.doctor.context import outputs

    return outputs(aws.call("cloudformation", "DescribeStacks", StackName=stack)["Stacks"][0])


def _stage_region(stage: str) -> str | None:
    """The stage's region from infra/stages.toml when run from the repository (None otherwise)."""
    import tomllib

    from taskrouter.repository import ROOT

    try:
        return tomllib.loads((ROOT / "infra" / "stages.toml").read_text())[stage]["region"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None


def _reason(text: str) -> str:
    if not 1 <= len(text) <= 300:
        raise argparse.ArgumentTypeError("give a reason of 1 to 300 characters")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter ops", description="operations of a deployed stage")
    commands = parser.add_subparsers(dest="command", required=True)
    mode = commands.add_parser("mode", help="the router's operations mode").add_subparsers(dest="action", required=True)
    for action, help_text in (("show", "the mode, who set it, and the alarm handling's state"),
                              ("set", "override the mode (or `auto`: hand back to the alarm handling)")):
        sub = mode.add_parser(action, help=help_text)
        sub.add_argument("--stage", required=True, help="the stage (infra/stages.toml), e.g. dev")
        sub.add_argument("--region", help="AWS region (default: the stage's, from infra/stages.toml)")
        if action == "set":
            sub.add_argument("mode", choices=[m.value for m in OpsMode] + [AUTO])
            sub.add_argument("--reason", type=_reason, help="why, up to 300 characters (required for an override; "
                             "announced on the alarm topic)")
            sub.add_argument("--by", help="who (default: your user name)")
    unseen = commands.add_parser("unseen", help="live tasks the serving adapter's manifest does not list (read from "
                                 "the deployed router and registry)")
    unseen.add_argument("--stage", required=True, help="the stage (infra/stages.toml), e.g. dev")
    unseen.add_argument("--region", help="AWS region (default: the stage's, from infra/stages.toml)")
    return parser
