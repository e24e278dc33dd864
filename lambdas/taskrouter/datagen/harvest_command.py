"""`taskrouter data harvest`: captured turns (docs/capture.md) as a labelled dataset, its task list
beside it and its disagreements flagged for `taskrouter review` (docs/data.md, Harvest).

    taskrouter data harvest (--stage STAGE [--region R] | --local) [--since DURATION] --out FILE [--force]

The stage's capture bucket is the output CaptureBucketName of its stack `<stage>-Capture`.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path

from taskrouter.arguments import OneLineParser
from taskrouter.datagen.captured import (
    MAX_SINCE,
    BucketCapture,
    CaptureStore,
    LocalCapture,
    duration,
    prefixes,
    read_records,
)
from taskrouter.datagen.destination import STANDARD_OUTPUT, Destination, DestinationError
from taskrouter.datagen.harvest import Harvest, dataset_text, harvest, task_file
from taskrouter.evaluation.files import write_atomically, write_new_atomically
from taskrouter.review.store import ReviewError, ReviewFiles, flag_for_review

PROG = "taskrouter data harvest"
CAPTURE_STACK = "{stage}-Capture"
BUCKET_OUTPUT = "CaptureBucketName"
LOCAL_DIR = "TASKROUTER_LOCAL_DIR"  # `make local`'s state folder (default .local under the repository)


class Refused(Exception):
    """Why nothing was harvested or written: one line, naming the flag or file and the fix."""


def main(argv: list[str]) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.region and args.local:
            parser.error("--region goes with --stage: --local reads this machine's records")
    except SystemExit as done:  # --help (0), or a usage error already told on one line (2)
        return done.code if isinstance(done.code, int) else 0
    try:
        return _run(args)
    except (Refused, DestinationError, ReviewError) as error:
        message = str(error)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: nothing written", file=sys.stderr)
        return 130
    except OSError as error:  # a record file that cannot be read
        message = f"{error.filename or 'a record'}: {error.strerror or error}"
    except Exception as error:  # botocore's (no credentials, no stack, access denied) among them
        message = f"{type(error).__name__}: {error}" if args.local else _explain_aws(error, args)
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    destination = Destination.check(args.out, force=args.force)  # before any record is read, not after
    assert destination.path is not None  # `-` is refused by the parser
    tasks_file = destination.path.with_name(f"{destination.path.stem}.tasks.json")
    _check_beside(tasks_file, args.force)
    now = datetime.now(timezone.utc)
    since = now - args.since if args.since is not None else None
    store, where = _store(args)
    result = harvest(read_records(store, prefixes(since, now)), since)
    _tell_skipped(result, where)
    if not result.lines:
        raise Refused(f"no turn harvested from {where}: nothing written to {destination}")
    # Flags first: a flags file that does not read stops the run before anything is written, and flags
    # added by a run that then fails are harmless (the same ids again next time).
    flags = flag_for_review(destination.path, result.flagged) if result.flagged else None
    _write(tasks_file, task_file(result.tasks), args.force)
    destination.write(dataset_text(result.lines))  # last: once it is there, its tasks and flags are beside it
    flagged = (f"the {len(result.flagged)} where the teacher disagreed first, flagged in {flags.name}" if flags
               else "no disagreement")  # fmt: skip
    print(f"{len(result.lines)} turns harvested to {destination} ({flagged}); their tasks in {tasks_file}")
    return 0


def _store(args: argparse.Namespace) -> tuple[CaptureStore, str]:
    if args.local:
        from taskrouter.repository import ROOT

        root = Path(os.environ.get(LOCAL_DIR) or ROOT / ".local") / "capture"
        if not root.is_dir():
            raise Refused(f"{root} is not a folder: nothing captured locally yet (`make local` with capture on), or "
                          f"set {LOCAL_DIR} to the folder make local uses")  # fmt: skip
        return LocalCapture(root), str(root)
    import boto3

    from taskrouter.cli import stage_region

    session = boto3.session.Session(region_name=args.region or stage_region(args.stage))
    stack = CAPTURE_STACK.format(stage=args.stage)
    described = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])}
    if BUCKET_OUTPUT not in outputs:
        raise Refused(f"stack {stack} has no output {BUCKET_OUTPUT}: stage {args.stage!r} stores no records (its "
                      f"teacher measures only: [{args.stage}.capture] enabled = false in infra/stages.toml); set it "
                      f"true and deploy (`npx cdk deploy '{args.stage}/*'`) to keep turns to harvest")  # fmt: skip
    bucket = outputs[BUCKET_OUTPUT]
    return BucketCapture(session.client("s3"), bucket), f"s3://{bucket}"


def _tell_skipped(result: Harvest, where: str) -> None:
    """What was read and not kept, on standard error: counts and field names, never content."""
    print(
        f"{PROG}: {result.read} records read from {where}: {result.older} older than --since, "
        f"{result.teacher_failed} whose teacher failed, {result.unusable} unusable, {result.same_id} sharing the id "
        f"of a newer record and {result.duplicates} duplicates skipped",
        file=sys.stderr,
    )
    if result.first_unusable:
        print(f"{PROG}: first unusable record: {result.first_unusable}", file=sys.stderr)
    if result.tasks_changed:
        print(f"{PROG}: tasks whose text differs between records, kept as the newest showed them: "
              f"{', '.join(result.tasks_changed)}", file=sys.stderr)  # fmt: skip


def _check_beside(path: Path, force: bool) -> None:
    """A file written beside --out follows the --out rules: never replaced without --force."""
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise Refused(f"{path}, which harvest writes beside --out, is not a regular file: move it, or give another --out")
    if path.exists() and not force:
        raise Refused(f"{path}, which harvest writes beside --out, exists: give --force to replace it, or another --out")


def _write(path: Path, text: str, force: bool) -> None:
    try:
        (write_atomically if force else write_new_atomically)(path, text)
    except FileExistsError:
        raise Refused(f"{path} was created by something else during the run: nothing written; give --force "
                      "to replace it, or another --out") from None  # fmt: skip
    except OSError as error:
        raise Refused(f"could not write to {path}: {error.strerror or error}") from None


def _explain_aws(error: Exception, args: argparse.Namespace) -> str:
    """botocore's errors on the way to the capture bucket, as what to do; the client's hints for the
    rest (credentials, profile, region)."""
    from botocore.exceptions import ClientError

    from taskrouter.cli import STAGES_FILE, Target, _explain_aws, _region_of, stage_region

    region = args.region or stage_region(args.stage)
    target = Target(args.stage, region, "--region" if args.region else STAGES_FILE if region else None)
    stack = CAPTURE_STACK.format(stage=args.stage)
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "ValidationError" and "does not exist" in str(error):
            return (f"stack {stack} was not found in {_region_of(target)}: is capture deployed for stage "
                    f"{args.stage!r} (`npx cdk deploy '{args.stage}/*'`)? Else give its region with --region")  # fmt: skip
        if code == "NoSuchBucket":
            return f"{error}: the bucket of output {BUCKET_OUTPUT} of stack {stack} is gone; deploy the stage again"
        if code in ("AccessDenied", "AccessDeniedException"):
            return (f"{error}: your AWS identity needs cloudformation:DescribeStacks on stack {stack}, s3:ListBucket "
                    "and s3:GetObject on its capture bucket, and kms:Decrypt on the bucket's key")  # fmt: skip
    return _explain_aws(error, target)


def _no_standard_output(value: str) -> str:
    if value == STANDARD_OUTPUT:
        raise argparse.ArgumentTypeError(
            "give a file, not -: its task list and review flags are written beside it, and review reads a file"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="captured turns as a labelled dataset (docs/data.md, Harvest)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stage", help=f"a deployed stage: its capture bucket, output {BUCKET_OUTPUT} of stack "
                                        f"{CAPTURE_STACK.format(stage='STAGE')}")  # fmt: skip
    source.add_argument("--local", action="store_true", help=f"make local's records, under ${LOCAL_DIR}/capture "
                                                             "(default .local/capture)")  # fmt: skip
    parser.add_argument("--region", help="--stage's AWS region (default: the stage's in infra/stages.toml)")
    parser.add_argument("--since", type=duration, metavar="DURATION",
                        help=f"only the turns of the last DURATION: 90m, 24h, 7d, at most {MAX_SINCE.days}d "
                             "(default: every record kept)")  # fmt: skip
    parser.add_argument("--out", required=True, type=_no_standard_output, metavar="FILE",
                        help="the JSONL dataset to write; NAME.tasks.json beside it (NAME: FILE less its suffix) holds its task list")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace --out and its task list when they exist")
    return parser

