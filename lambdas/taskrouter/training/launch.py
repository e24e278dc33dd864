"""`taskrouter adapter launch`: `taskrouter adapter train` as a SageMaker training job (issue 10).

    taskrouter adapter launch --stage S --name NAME --dataset FILE.jsonl [--tasks FILE]
                              [--epochs N] [--max-steps N] [--seed S] [--rank R] [--learning-rate LR]
                              [--batch-size N] [--region R] [--wait | --detach]

The job runs the same entry point as a local run, on the stage's GPU instance type with AWS's
PyTorch training image (`[<stage>.training]` in infra/stages.toml), managed spot with checkpoints,
within hard time limits. It reads and writes the stage's artifact bucket alone, under the stage's
KMS key, as the role the stack made for it (the `{stage}-ModelArtifacts` stack's outputs):

    training/<job>/input/train/        the dataset and the task list (channel `train`)
    training/<job>/input/code/         the taskrouter package and the job's requirements.txt
    training/<job>/input/sm_drivers/   the SDK's container driver (its sm_train.sh runs the command)
    training/<job>/checkpoints/        /opt/ml/checkpoints, synced by SageMaker: a restarted spot job resumes
    training/<job>/output/model.tar.gz /opt/ml/model, archived by SageMaker: the adapter a manifest names
    base/<id>/<revision>/              the base's weights, staged there on deploy (channel `base`)

Waiting (the default), it follows the job and, once it completes, writes the adapter's manifest,
model_artifacts/adapters/<name>.json. The SageMaker Python SDK v3 (the `launch` extra, ~0.9 GB) and
the stage config (infra.config, on aws-cdk-lib) are imported only when a job is launched.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskrouter.core.task_spec import load_task_file
from taskrouter.core.validation import describe
from taskrouter.evaluation.dataset import DatasetError, load_dataset, turns_of
from taskrouter.repository import ROOT
from taskrouter.training.options import add_training_options

PROG = "taskrouter adapter launch"
STACK = "{stage}-ModelArtifacts"
STACK_OUTPUTS = ("ArtifactBucketName", "ArtifactKeyArn", "TrainingRoleArn", "BaseWeightsS3Uri")
ADAPTERS_DIR = ROOT / "model_artifacts" / "adapters"
METHOD = "qlora"  # on the job's GPU, train.py loads the base in 4 bits

# Inside the container (SageMaker's fixed paths: /opt/ml/input/data/<channel>, /opt/ml/model,
# and CheckpointConfig.LocalPath, which SageMaker syncs with CheckpointConfig.S3Uri).
TRAIN_CHANNEL, BASE_CHANNEL = "train", "base"
CHANNELS_PATH = "/opt/ml/input/data"
MODEL_PATH = "/opt/ml/model"
CHECKPOINTS_PATH = "/opt/ml/checkpoints"
TASKS_NAME = "tasks.json"  # the task list's name in the train channel
COMMAND = "python3 -m taskrouter.cli adapter train"  # run from the code channel, where taskrouter/ lies
# The base's weights, pip's wheels, checkpoints. On a family with local NVMe (g5), SageMaker mounts that
# instead, and refuses a size over it (g5.2xlarge: 450 GB).
VOLUME_GB = 50
# The job's Python packages: those that decide what training does, at this repository's pins (the
# training extras, else requirements.lock). torch is the image's own CUDA build, held to its version.
JOB_PACKAGES = (
    "transformers", "tokenizers", "safetensors", "huggingface-hub", "accelerate", "peft", "bitsandbytes",
    "pydantic", "pydantic-core",
)
POLL_SECONDS = 30
TERMINAL = ("Completed", "Failed", "Stopped")
# botocore/data/sagemaker/2017-07-24/service-2.json, shape TrainingJobName.
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_TIMESTAMP = "%Y%m%d-%H%M%S"


class LaunchError(Exception):
    """What stops a launch; the message is the one line the user reads, with the fix."""


@dataclass(frozen=True)
class StackOutputs:
    """What the `{stage}-ModelArtifacts` stack made for training jobs."""

    bucket: str
    key_arn: str  # the artifact key: the bucket's, the job's output and (where it takes one) volume
    role_arn: str  # the job's execution role
    base_weights_uri: str  # s3://bucket/base/<id>/<revision>/, the base's files, uncompressed

    @classmethod
    def of(cls, stack: str, outputs: dict[str, str], deploy: str) -> StackOutputs:
        missing = [name for name in STACK_OUTPUTS if not outputs.get(name)]
        if missing:
            raise LaunchError(f"stack {stack} has no output {', '.join(missing)}: deploy the stage again ({deploy})")
        return cls(*(outputs[name] for name in STACK_OUTPUTS))


@dataclass(frozen=True)
class Options:
    """The command's own choices: the adapter, its data and the training command's hyper-parameters."""

    name: str
    dataset: Path
    tasks: Path
    epochs: int = 2
    max_steps: int | None = None
    seed: int = 0
    rank: int = 16
    learning_rate: float = 2e-4
    batch_size: int = 4


@dataclass(frozen=True)
class JobPlan:
    """The training job, decided from the stage config, the stack's outputs and the options before
    anything is uploaded: every S3 location, the limits, the image and the command."""

    job_name: str
    region: str
    role_arn: str
    image_uri: str
    image_torch: str  # the image's torch version, which the job's requirements hold
    instance_type: str
    spot: bool
    max_run_s: int
    max_wait_s: int | None  # spot only: run time plus waiting for capacity
    bucket: str
    key_arn: str
    volume_key_arn: str | None  # None where the instance's disk is NVMe, encrypted in hardware
    key_prefix: str  # "training": the launcher's uploads go to <key_prefix>/<job>/input/<channel>
    train_uri: str
    base_uri: str
    output_path: str
    checkpoint_uri: str
    archive_uri: str
    command: str
    args: tuple[str, ...]
    tags: tuple[tuple[str, str], ...]
    manifest: dict[str, Any]  # the adapter manifest the completed job gives (infra.config.AdapterManifest)


def job_name(stage: str, adapter: str, started_at: datetime) -> str:
    """`taskrouter-<stage>-<adapter>-<UTC yyyymmdd-HHMMSS>`, within SageMaker's 63 characters."""
    name = f"taskrouter-{stage}-{adapter}-{started_at.astimezone(timezone.utc).strftime(_TIMESTAMP)}"
    if len(name) > 63:
        room = 63 - len(f"taskrouter-{stage}--") - len(started_at.strftime(_TIMESTAMP))
        raise LaunchError(
            f"--name {adapter!r}: the job name {name!r} is over SageMaker's 63 characters; with stage {stage} "
            f"an adapter's name may have at most {room}"
        )
    if not _JOB_NAME.fullmatch(name):
        raise LaunchError(f"--name {adapter!r}: {name!r} is no SageMaker job name ([a-zA-Z0-9-])")
    return name


def adapter_manifest(stage: Any, options: Options, archive_uri: str, description: str = "") -> dict[str, Any]:
    """The manifest a stage names the adapter by (model_artifacts/README.md, "Adapters"), validated."""
    from infra.config import AdapterManifest

    data = {
        "name": options.name,
        "description": description,
        "base_model": stage.base_model.model_dump(),
        "adapter": {"method": METHOD, "rank": options.rank, "archive_s3_uri": archive_uri},
    }
    try:
        return AdapterManifest.model_validate(data).model_dump(mode="json", exclude_none=True)
    except ValidationError as error:
        raise LaunchError(f"the adapter's manifest: {describe(error)}") from None


def plan_job(stage: Any, outputs: StackOutputs, options: Options, *, region: str, started_at: datetime) -> JobPlan:
    """The training job for `options` on `stage` (an infra.config.StageConfig) in the deployed stack.
    Pure: no AWS call (the image's URI is the SDK's offline table)."""
    from infra.model_artifacts import TRAINING_PREFIX

    training = stage.training
    expected_base = f"s3://{outputs.bucket}/{stage.base_weights_prefix}"
    if outputs.base_weights_uri != expected_base:
        raise LaunchError(
            f"the deployed stack stages the base at {outputs.base_weights_uri}, not at the stage's "
            f"{expected_base} (base_model changed since the last deploy?): deploy the stage first "
            f"(npx cdk deploy '{stage.name}/*')"
        )
    name = job_name(stage.name, options.name, started_at)
    image_uri, image_torch = training_image(training.instance_type, training.image_tag, region)
    root = f"s3://{outputs.bucket}/{TRAINING_PREFIX}"  # s3://bucket/training/
    job = f"{root}{name}"
    archive_uri = f"{job}/output/model.tar.gz"
    channel = f"{CHANNELS_PATH}/{TRAIN_CHANNEL}"
    args = [
        "--dataset", f"{channel}/{options.dataset.name}", "--tasks", f"{channel}/{TASKS_NAME}",
        "--base-model", f"{CHANNELS_PATH}/{BASE_CHANNEL}", "--revision", stage.base_model.revision,
        "--out", MODEL_PATH, "--no-archive",  # SageMaker archives /opt/ml/model itself
        "--checkpoint-dir", CHECKPOINTS_PATH, "--checkpoint-every", str(training.checkpoint_every_steps),
        "--epochs", str(options.epochs), "--seed", str(options.seed), "--rank", str(options.rank),
        "--learning-rate", str(options.learning_rate), "--batch-size", str(options.batch_size),
    ]
    if options.max_steps is not None:
        args += ["--max-steps", str(options.max_steps)]
    description = (
        f"SageMaker training job {name} ({training.instance_type}): {options.dataset.name}, "
        f"{options.epochs} epochs{f', at most {options.max_steps} steps' if options.max_steps else ''}, seed {options.seed}"
    )
    return JobPlan(
        job_name=name,
        region=region,
        role_arn=outputs.role_arn,
        image_uri=image_uri,
        image_torch=image_torch,
        instance_type=training.instance_type,
        spot=training.spot,
        max_run_s=training.max_run_hours * 3600,
        max_wait_s=training.max_wait_hours * 3600 if training.spot else None,
        bucket=outputs.bucket,
        key_arn=outputs.key_arn,
        volume_key_arn=outputs.key_arn if training.volume_kms_supported else None,
        key_prefix=TRAINING_PREFIX.rstrip("/"),
        train_uri=f"{job}/input/{TRAIN_CHANNEL}",
        base_uri=outputs.base_weights_uri,
        output_path=root,  # SageMaker adds <job>/output/model.tar.gz
        checkpoint_uri=f"{job}/checkpoints/",
        archive_uri=archive_uri,
        command=COMMAND,
        args=tuple(args),
        tags=(("taskrouter:stage", stage.name), ("taskrouter:adapter", options.name)),
        manifest=adapter_manifest(stage, options, archive_uri, description),
    )


def training_image(instance_type: str, tag: str, region: str) -> tuple[str, str]:
    """AWS's PyTorch training image (Deep Learning Containers) at the stage's tag, in `region`'s DLC
    registry as the SageMaker SDK knows it; and the image's torch version."""
    from sagemaker.core import image_uris

    from infra.model_artifacts import TRAINING_IMAGE_REPOSITORY  # the one repository the job's role may pull

    torch_version, python = re.match(r"^([0-9.]+)-gpu-(py[0-9]+)-", tag).groups()
    try:
        known = image_uris.retrieve(
            framework="pytorch", region=region, version=torch_version, py_version=python,
            instance_type=instance_type, image_scope="training",
        )
    except ValueError as error:
        raise LaunchError(f"training.image_tag {tag!r}: {' '.join(str(error).split())}") from None
    repository, short_tag = known.rsplit(":", 1)
    if not repository.endswith(f"/{TRAINING_IMAGE_REPOSITORY}") or not tag.startswith(f"{short_tag}-"):
        raise LaunchError(f"training.image_tag {tag!r} is not a {TRAINING_IMAGE_REPOSITORY} tag of {known}")
    return f"{repository}:{tag}", torch_version


def job_requirements(image_torch: str) -> list[str]:
    """The job's requirements.txt: JOB_PACKAGES at this repository's pins, torch at the image's."""
    pins = _pins((ROOT / "requirements.lock").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins |= _pins([*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)])
    missing = [name for name in JOB_PACKAGES if _normal(name) not in pins]
    if missing:
        raise LaunchError(f"no pin for {', '.join(missing)} in pyproject.toml or requirements.lock")
    # Holding torch to the image's version keeps its CUDA build: a package wanting another torch
    # then fails the install at once, rather than pulling a different multi-GB build from PyPI.
    return [f"torch=={image_torch}", *(f"{name}=={pins[_normal(name)]}" for name in JOB_PACKAGES)]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if match:
            pins[_normal(match[1])] = match[2]
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


# -- the SageMaker SDK -------------------------------------------------------------------------------
# sagemaker-train's ModelTrainer with what the stage decides where the SDK would decide itself. The
# SDK's choices it overrides, all in ModelTrainer 1.27.0 (sagemaker/train/model_trainer.py):
# - the job's name: `_create_training_job_args` names it `_get_unique_name(base_job_name)`, the base
#   plus the launching machine's local time; here the name is given whole (UTC), and the uploads'
#   keys and the checkpoints' URI, decided before, name it;
# - where its uploads go: `_resolve_staging_bucket` asks IAM (SimulatePrincipalPolicy) whether the
#   role may write every object of the default bucket, and on a "no" (the stage's role may write
#   training/ only) stages them under the output path's prefix instead (training/training/...); here
#   they go to the stage's bucket, under training/<job>/input, whatever IAM would answer.
# Other SDK behaviour turned off: its IAM validation of the role (`_sdk_scope`), which wants the EC2
# network-interface actions of a job in a VPC that this role (no VPC) rightly lacks; its telemetry and
# the defaults of a user's SageMaker config file, which would add to the stage's request (SDK_CONFIG,
# the session's whole config).
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


@cache
def _trainer_class() -> type:
    from pydantic import PrivateAttr
    from sagemaker.train import model_trainer as sdk

    class StageTrainer(sdk.ModelTrainer):
        """ModelTrainer naming the job `base_job_name` itself and staging in the stage's bucket (above)."""

        _stage_bucket: str = PrivateAttr(default="")

        def _create_training_job_args(self, input_data_config=None, boto3=False):
            generated = sdk._get_unique_name
            sdk._get_unique_name = lambda base, max_length=63: base[:max_length]
            try:
                return super()._create_training_job_args(input_data_config=input_data_config, boto3=boto3)
            finally:
                sdk._get_unique_name = generated

        def _resolve_staging_bucket(self) -> tuple[str, None]:
            return self._stage_bucket, None

    return StageTrainer


def aws_session(region: str) -> Any:
    import boto3

    return boto3.session.Session(region_name=region)


def sagemaker_session(boto_session: Any, bucket: str) -> Any:
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto_session, default_bucket=bucket, sagemaker_config=SDK_CONFIG)


def stack_outputs(boto_session: Any, stage: str, region: str) -> StackOutputs:
    from botocore.exceptions import ClientError

    stack, deploy = STACK.format(stage=stage), f"npx cdk deploy '{stage}/*'"
    try:
        described = boto_session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as error:
        if error.response["Error"]["Code"] == "ValidationError" and "does not exist" in str(error):
            raise LaunchError(f"stack {stack} is not deployed in {region}: deploy the stage first ({deploy})") from None
        raise
    return StackOutputs.of(stack, {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}, deploy)


def write_job_inputs(plan: JobPlan, options: Options, folder: Path) -> tuple[Path, Path]:
    """The two folders the SDK uploads: the train channel (the dataset and the task list) and the
    code (the taskrouter package and requirements.txt)."""
    train, code = folder / TRAIN_CHANNEL, folder / "code"
    train.mkdir()
    shutil.copyfile(options.dataset, train / options.dataset.name)
    shutil.copyfile(options.tasks, train / TASKS_NAME)
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, code / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (code / "requirements.txt").write_text(
        f"# {PROG}: the job's packages on {plan.image_uri.rsplit('/', 1)[1]} (its torch stays)\n"
        + "\n".join(job_requirements(plan.image_torch)) + "\n"
    )
    return train, code


def trainer_for(plan: JobPlan, session: Any, train_dir: Path, code_dir: Path) -> Any:
    """The ModelTrainer of `plan`; constructing it calls no AWS API (`_sdk_scope` on)."""
    from sagemaker.core.training.configs import (
        CheckpointConfig, Compute, InputData, OutputDataConfig, SourceCode, StoppingCondition, Tag,
    )

    compute = {"volume_kms_key_id": plan.volume_key_arn} if plan.volume_key_arn else {}
    stopping = {"max_wait_time_in_seconds": plan.max_wait_s} if plan.max_wait_s else {}
    with _sdk_scope():
        trainer = _trainer_class()(
            sagemaker_session=session,
            role=plan.role_arn,
            base_job_name=plan.job_name,
            input_s3_key_prefix=plan.key_prefix,  # its uploads: <key_prefix>/<job>/input/<channel>
            training_image=plan.image_uri,
            source_code=SourceCode(
                source_dir=str(code_dir), requirements="requirements.txt", command=plan.command, args=list(plan.args),
            ),
            compute=Compute(
                instance_type=plan.instance_type, instance_count=1, volume_size_in_gb=VOLUME_GB,
                enable_managed_spot_training=plan.spot, **compute,
            ),
            stopping_condition=StoppingCondition(max_runtime_in_seconds=plan.max_run_s, **stopping),
            output_data_config=OutputDataConfig(
                s3_output_path=plan.output_path, kms_key_id=plan.key_arn, compression_type="GZIP",
            ),
            checkpoint_config=CheckpointConfig(s3_uri=plan.checkpoint_uri, local_path=CHECKPOINTS_PATH),
            input_data_config=[
                InputData(channel_name=TRAIN_CHANNEL, data_source=str(train_dir)),  # uploaded to plan.train_uri
                InputData(channel_name=BASE_CHANNEL, data_source=plan.base_uri),
            ],
            # The base is a folder of the channel, never a hub id: nothing is fetched from the hub.
            environment={"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
            tags=[Tag(key=key, value=value) for key, value in plan.tags],
        )
    trainer._stage_bucket = plan.bucket
    return trainer


def start(trainer: Any, plan: JobPlan) -> None:
    """Uploads the job's inputs and creates the training job (CreateTrainingJob)."""
    with _sdk_scope():
        trainer.train(wait=False, logs=False)
    job = trainer._latest_training_job  # the resource ModelTrainer created
    started = job.training_job_name
    if started != plan.job_name:  # the SDK named it after all: its keys and checkpoints would not match
        job.stop()  # never leave a job billing whose inputs and checkpoints are somewhere else
        raise LaunchError(f"the SageMaker SDK named the job {started}, not {plan.job_name}, and it was stopped: "
                          "check the sagemaker-train pin")


@contextmanager
def _sdk_scope() -> Iterator[None]:
    """The SDK with its IAM role validation off (SAGEMAKER_VALIDATE_ROLE, its documented switch) and
    its log records (warnings, and errors this command tells in one line of its own) kept off stderr."""
    sdk_logger = logging.getLogger("sagemaker")
    quiet = logging.NullHandler()
    before = os.environ.get("SAGEMAKER_VALIDATE_ROLE")
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    sdk_logger.addHandler(quiet)
    propagate, sdk_logger.propagate = sdk_logger.propagate, False
    try:
        yield
    finally:
        sdk_logger.propagate = propagate
        sdk_logger.removeHandler(quiet)
        if before is None:
            os.environ.pop("SAGEMAKER_VALIDATE_ROLE", None)
        else:
            os.environ["SAGEMAKER_VALIDATE_ROLE"] = before


# -- following the job -----------------------------------------------------------------------------
def follow(sagemaker: Any, plan: JobPlan, *, poll_s: float = POLL_SECONDS) -> dict[str, Any]:
    """Print the job's status changes until it ends; its last description."""
    shown = 0
    while True:
        job = sagemaker.describe_training_job(TrainingJobName=plan.job_name)
        transitions = job.get("SecondaryStatusTransitions", [])
        for transition in transitions[shown:]:
            message = " ".join(transition.get("StatusMessage", "").split())
            print(f"  {transition['Status']}{f': {message}' if message else ''}", flush=True)
        shown = len(transitions)
        if job["TrainingJobStatus"] in TERMINAL:
            return job
        time.sleep(poll_s)


def _follow_commands(plan: JobPlan) -> list[str]:
    name, region = shlex.quote(plan.job_name), shlex.quote(plan.region)
    return [
        f"aws sagemaker describe-training-job --region {region} --training-job-name {name} "
        "--query '[TrainingJobStatus,SecondaryStatus,FailureReason]'",
        f"aws logs tail /aws/sagemaker/TrainingJobs --region {region} --log-stream-name-prefix {name} --follow",
    ]


def _completed(plan: JobPlan, stage: Any, job: dict[str, Any]) -> None:
    archive = job.get("ModelArtifacts", {}).get("S3ModelArtifacts") or plan.archive_uri
    manifest = {**plan.manifest, "adapter": {**plan.manifest["adapter"], "archive_s3_uri": archive}}
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    billable, seconds = job.get("BillableTimeInSeconds"), job.get("TrainingTimeInSeconds")
    spent = f" ({seconds} s of training, {billable} s billed)" if billable is not None and seconds is not None else ""
    print(f"training job {plan.job_name} completed{spent}: the adapter is {archive}")
    path = ADAPTERS_DIR / f"{plan.manifest['name']}.json"
    if path.exists():
        print(f"{_shown(path)} exists and is left as it is; this job's manifest:\n{text}", end="")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"manifest written to {_shown(path)}")
    name = plan.manifest["name"]
    print("\n".join([
        "next:",
        f"  1. serve it beside the others: add \"{_shown(path)}\" to the adapters of [{stage.name}] in infra/stages.toml",
        f"  2. deploy: npx cdk deploy '{stage.name}/*'",
        f"  3. evaluate it through the endpoint: TASKROUTER_SAGEMAKER_ENDPOINT={stage.endpoint_name} "
        f"TASKROUTER_SAGEMAKER_COMPONENT={stage.adapter_component_name(name)} .venv/bin/taskrouter eval "
        f"--dataset <held-out dataset> --target local --tasks <task file> --out eval/{name}",
        f"  4. gate it against the live adapter: .venv/bin/taskrouter eval compare eval/{name} --gate eval/live",
        f"  5. promote: router_adapter = \"{name}\" in [{stage.name}], and deploy",
    ]))


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- the command -------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _launch(args)
    except LaunchError as error:
        message = str(error)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # botocore's and the SDK's: one line, no traceback
        message = _aws_error(error)
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _launch(args: argparse.Namespace) -> int:
    try:
        import sagemaker.train  # noqa: F401  (the launch extra)

        from infra.config import ConfigError, load_serving, load_stages
    except ImportError as error:
        raise LaunchError(f"{error.name} is missing: pip install 'taskrouter[launch]'") from None

    try:
        stages = load_stages()
        serving = load_serving()
    except ConfigError as error:
        raise LaunchError(str(error)) from None
    if args.stage not in stages:
        raise LaunchError(f"--stage {args.stage!r} is not a stage of infra/stages.toml ({', '.join(stages)})")
    stage = stages[args.stage]
    options = Options(
        name=args.name, dataset=Path(args.dataset), tasks=Path(args.tasks), epochs=args.epochs,
        max_steps=args.max_steps, seed=args.seed, rank=args.rank, learning_rate=args.learning_rate,
        batch_size=args.batch_size,
    )
    _check_inputs(options)
    if options.rank > serving.max_lora_rank:
        raise LaunchError(
            f"--rank {options.rank} is over serving.json's max_lora_rank {serving.max_lora_rank}: "
            "the stage could not serve the adapter"
        )
    # The adapter's name and rank as its manifest and the job's name take them, told before any AWS call
    # (the archive's place is known once the stack is read: any well-formed one does here).
    adapter_manifest(stage, options, f"s3://bucket-to-come/training/{options.name}/output/model.tar.gz")
    started_at = datetime.now(timezone.utc)
    job_name(stage.name, options.name, started_at)
    region = args.region or stage.region

    boto_session = aws_session(region)
    outputs = stack_outputs(boto_session, stage.name, region)
    plan = plan_job(stage, outputs, options, region=region, started_at=started_at)
    session = sagemaker_session(boto_session, plan.bucket)
    with tempfile.TemporaryDirectory(prefix="taskrouter-launch-") as folder:
        train_dir, code_dir = write_job_inputs(plan, options, Path(folder))
        start(trainer_for(plan, session, train_dir, code_dir), plan)

    limits = f"at most {stage.training.max_run_hours} h of training"
    if plan.spot:
        limits = f"managed spot, {limits} and {stage.training.max_wait_hours} h in all"
    print(f"training job {plan.job_name} started in {region}: {plan.instance_type}, {limits}")
    print(f"its adapter: {plan.archive_uri}")
    if not args.wait:
        print("follow it:\n" + "\n".join(f"  {command}" for command in _follow_commands(plan)))
        print(f"once it has completed, {_shown(ADAPTERS_DIR / f'{options.name}.json')} is:")
        print(json.dumps(plan.manifest, indent=2, ensure_ascii=False))
        return 0
    print("following it (Ctrl-C stops following, not the job):", flush=True)
    try:
        job = follow(session.sagemaker_client, plan)
    except KeyboardInterrupt:
        print(f"{PROG}: stopped following {plan.job_name}, which goes on: {_follow_commands(plan)[0]}", file=sys.stderr)
        return 130
    except Exception as error:  # throttled, signed out, offline: the job goes on all the same
        raise LaunchError(
            f"lost track of {plan.job_name} ({_aws_error(error)}), which goes on: {_follow_commands(plan)[0]}"
        ) from None
    status = job["TrainingJobStatus"]
    if status != "Completed":
        reason = job.get("FailureReason") or "no reason given"
        raise LaunchError(f"training job {plan.job_name} {status.lower()}: {reason} (logs: {_follow_commands(plan)[1]})")
    _completed(plan, stage, job)
    return 0


def _check_inputs(options: Options) -> None:
    """The dataset and the task list as the job's command will read them, checked here first."""
    if options.dataset.name == TASKS_NAME:
        raise LaunchError(f"--dataset: the job's channel holds the task list as {TASKS_NAME}: name the dataset otherwise")
    try:
        tasks = {task.name for task in load_task_file(options.tasks, updated_at="")}
        turns = turns_of(load_dataset(options.dataset))
    except ValidationError as error:
        raise LaunchError(f"--tasks {options.tasks}: {describe(error)}") from None
    except (DatasetError, ValueError, OSError) as error:
        raise LaunchError(str(error)) from None
    unknown = sorted({t.expected.task for t in turns if t.expected.task and t.expected.task not in tasks})
    if unknown:
        raise LaunchError(f"{options.dataset.name}: labels {unknown} are not tasks of {options.tasks.name}")


def _aws_error(error: Exception) -> str:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(error, NoCredentialsError):
        return "no AWS credentials: sign in (aws sso login, AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        operation = getattr(error, "operation_name", "")
        message = error.response.get("Error", {}).get("Message", str(error))
        hint = ""
        if code == "ResourceLimitExceeded":
            hint = " (raise the quota of the instance type for training, spot where spot, in Service Quotas)"
        elif code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            hint = (" (the launcher needs cloudformation:DescribeStacks, s3:PutObject under training/, "
                    "kms:GenerateDataKey on the artifact key, sagemaker:CreateTrainingJob and DescribeTrainingJob, "
                    "iam:PassRole on the training role)")
        elif code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId"):
            hint = " (sign in again)"
        return f"{operation}: {code}: {message}{hint}"
    return f"{type(error).__name__}: {error}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="train a routing LoRA adapter as a SageMaker training job of a deployed stage",
    )
    parser.add_argument("--stage", required=True, help="a stage of infra/stages.toml, deployed")
    parser.add_argument("--name", required=True, help="the adapter's name (its manifest's), e.g. sales-router-v2")
    parser.add_argument("--dataset", required=True, help="labelled conversations (docs/evaluation.md: the dataset format)")
    add_training_options(parser)
    parser.add_argument("--region", help="default: the stage's")
    follow_group = parser.add_mutually_exclusive_group()
    follow_group.add_argument(
        "--wait", dest="wait", action="store_true", default=True,
        help="follow the job and write its manifest once it completes (the default)",
    )
    follow_group.add_argument("--detach", dest="wait", action="store_false", help="start the job and return")
    return parser
