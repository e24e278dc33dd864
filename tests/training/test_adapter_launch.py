"""`taskrouter adapter launch`: the training job's request built from the stage config and the stack's
outputs (no AWS), then the real command against moto's server on 127.0.0.1 with real clients (boto3,
the SageMaker SDK): the job moto holds, the objects in the stage's bucket, the calls made.

The API's field names are botocore's service model, the source of truth for both the SDK's requests
and moto's answers: botocore/data/sagemaker/2017-07-24/service-2.json (CreateTrainingJobRequest,
ResourceConfig, StoppingCondition, CheckpointConfig, OutputDataConfig, AlgorithmSpecification,
Channel, S3DataSource) and botocore/data/s3/2006-03-01/service-2.json (HeadObjectOutput)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("sagemaker.train", reason="the launch extra; `make test` installs it")

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from infra import config  # noqa: E402
from infra.config import StageConfig, load_stages  # noqa: E402
from infra.model_artifacts import TRAINING_IMAGE_REPOSITORY  # noqa: E402
from taskrouter.cli import main  # noqa: E402
from taskrouter.training import launch  # noqa: E402
from taskrouter.training.cli import _parser as train_parser  # noqa: E402
from taskrouter.training.launch import JobPlan, LaunchError, Options, StackOutputs  # noqa: E402

# sagemaker-train 1.27.0's model_trainer.py imports its own deprecated shim (sagemaker.train.configs)
pytestmark = pytest.mark.filterwarnings("ignore:sagemaker.train.configs has been moved:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "datasets" / "example.jsonl"
TASKS_FILE = ROOT / "tasks" / "default_tasks.json"
ACCOUNT = "123456789012"  # moto's
ADAPTER = "sales-router-v3"
STARTED = datetime(2026, 11, 25, 16, 30, 5, tzinfo=timezone.utc)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def stage_with(training: dict, name: str = "dev") -> StageConfig:
    """The repository's stage with other training settings, validated as stages.toml would be."""
    data = load_stages()[name].model_dump(mode="json")
    data["training"] = {**data["training"], **training}
    return StageConfig.model_validate(data)


def outputs_of(stage: StageConfig) -> StackOutputs:
    bucket = f"taskrouter-{stage.name}-models-{ACCOUNT}-{stage.region}"
    return StackOutputs(
        bucket=bucket,
        key_arn=f"arn:aws:kms:{stage.region}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/{stage.name}-ModelArtifacts-TrainingRole",
        base_weights_uri=f"s3://{bucket}/{stage.base_weights_prefix}",
    )


def plan(stage: StageConfig, **options) -> JobPlan:
    chosen = Options(name=ADAPTER, dataset=DATASET, tasks=TASKS_FILE, **options)
    return launch.plan_job(stage, outputs_of(stage), chosen, region=stage.region, started_at=STARTED)


# -- the request, from config and outputs, without AWS ---------------------------------------------
def test_the_trainer_is_built_from_the_stage_config_and_the_stack_outputs(tmp_path):
    stage = load_stages()["dev"]
    training, outputs = stage.training, outputs_of(stage)
    job = plan(stage, max_steps=300, rank=8)
    name = f"taskrouter-dev-{ADAPTER}-20261125-163005"
    root = f"s3://{outputs.bucket}/training/"
    assert job.job_name == name
    assert job.manifest == {
        "name": ADAPTER,
        "description": job.manifest["description"],
        "base_model": {"id": stage.base_model.id, "revision": stage.base_model.revision},
        "adapter": {"method": "qlora", "rank": 8, "archive_s3_uri": f"{root}{name}/output/model.tar.gz"},
    }
    train_dir, code_dir = launch.write_job_inputs(job, Options(ADAPTER, DATASET, TASKS_FILE), tmp_path)
    session = launch.sagemaker_session(boto3.session.Session(region_name=stage.region), outputs.bucket)
    trainer = launch.trainer_for(job, session, train_dir, code_dir)

    assert trainer.base_job_name == name and trainer.input_s3_key_prefix == "training"
    assert trainer.role == outputs.role_arn
    assert trainer.training_image == (
        f"763104351884.dkr.ecr.us-east-1.amazonaws.com/{TRAINING_IMAGE_REPOSITORY}:{training.image_tag}"
    )
    assert (trainer.compute.instance_type, trainer.compute.instance_count) == (training.instance_type, 1)
    assert trainer.compute.enable_managed_spot_training is True
    assert not isinstance(trainer.compute.volume_kms_key_id, str)  # g5: its NVMe disk takes no KMS key
    assert trainer.stopping_condition.max_runtime_in_seconds == training.max_run_hours * 3600
    assert trainer.stopping_condition.max_wait_time_in_seconds == training.max_wait_hours * 3600
    assert (trainer.checkpoint_config.s3_uri, trainer.checkpoint_config.local_path) == (
        f"{root}{name}/checkpoints/", "/opt/ml/checkpoints",
    )
    assert (trainer.output_data_config.s3_output_path, trainer.output_data_config.kms_key_id) == (root, outputs.key_arn)
    channels = {c.channel_name: c.data_source for c in trainer.input_data_config}
    assert channels == {"train": str(train_dir), "base": outputs.base_weights_uri}
    assert sorted(p.name for p in train_dir.iterdir()) == ["example.jsonl", "tasks.json"]
    assert trainer.source_code.command == "python3 -m taskrouter.cli adapter train"
    assert trainer.source_code.requirements == "requirements.txt"
    assert (code_dir / "taskrouter" / "training" / "train.py").is_file()
    assert not list(code_dir.rglob("__pycache__"))
    assert trainer.environment["HF_HUB_OFFLINE"] == "1"
    assert {(t.key, t.value) for t in trainer.tags} == {("taskrouter:stage", "dev"), ("taskrouter:adapter", ADAPTER)}

    # the command is the training command's own, parsed by its own parser
    parsed = train_parser().parse_args(trainer.source_code.args)
    assert (parsed.dataset, parsed.tasks) == ("/opt/ml/input/data/train/example.jsonl", "/opt/ml/input/data/train/tasks.json")
    assert (parsed.base_model, parsed.revision, parsed.out) == ("/opt/ml/input/data/base", stage.base_model.revision, "/opt/ml/model")
    assert parsed.archive is False  # SageMaker archives /opt/ml/model into model.tar.gz
    assert (parsed.checkpoint_dir, parsed.checkpoint_every) == ("/opt/ml/checkpoints", training.checkpoint_every_steps)
    assert (parsed.max_steps, parsed.rank, parsed.epochs, parsed.seed) == (300, 8, 2, 0)
    assert (parsed.learning_rate, parsed.batch_size) == (2e-4, 4)


def test_an_ebs_only_instance_takes_the_key_on_its_volume_and_on_demand_has_no_wait_limit(tmp_path):
    stage = stage_with({"instance_type": "ml.p3.2xlarge", "spot": False, "max_run_hours": 3})
    job = plan(stage)
    train_dir, code_dir = launch.write_job_inputs(job, Options(ADAPTER, DATASET, TASKS_FILE), tmp_path)
    session = launch.sagemaker_session(boto3.session.Session(region_name=stage.region), job.bucket)
    trainer = launch.trainer_for(job, session, train_dir, code_dir)
    assert trainer.compute.instance_type == "ml.p3.2xlarge"
    assert trainer.compute.volume_kms_key_id == outputs_of(stage).key_arn
    assert trainer.compute.enable_managed_spot_training is False
    assert trainer.stopping_condition.max_runtime_in_seconds == 3 * 3600
    assert not isinstance(trainer.stopping_condition.max_wait_time_in_seconds, int)
    assert "--max-steps" not in job.args


def test_the_image_is_the_dlc_training_image_in_the_registry_the_role_may_pull_from():
    from aws_cdk.region_info import RegionInfo  # what infra/model_artifacts.py grants the role ECR pulls on

    for stage in load_stages().values():
        job = plan(stage)
        registry, _, rest = job.image_uri.partition("/")
        assert registry == f"{RegionInfo.get(stage.region).dlc_repository_account}.dkr.ecr.{stage.region}.amazonaws.com"
        assert rest == f"{TRAINING_IMAGE_REPOSITORY}:{stage.training.image_tag}"
        assert job.image_torch == stage.training.image_tag.split("-")[0]
    with pytest.raises(LaunchError, match="image_tag"):
        plan(stage_with({"image_tag": "9.9.0-gpu-py312-cu129-ubuntu22.04-sagemaker"}))


def test_the_job_is_named_in_utc_within_sagemakers_63_characters():
    local = STARTED.astimezone(timezone(timedelta(hours=-7)))
    assert launch.job_name("dev", "a-b", local) == "taskrouter-dev-a-b-20261125-163005"
    longest = "a" * (63 - len("taskrouter-prod--20261125-163005"))
    assert len(launch.job_name("prod", longest, STARTED)) == 63
    with pytest.raises(LaunchError, match=f"at most {len(longest)}"):
        launch.job_name("prod", longest + "b", STARTED)


def test_the_jobs_requirements_are_the_repositorys_pins_and_the_images_torch():
    import tomllib

    lines = launch.job_requirements("2.8.0")
    pins = dict(line.split("==") for line in lines)
    assert lines[0] == "torch==2.8.0" and len(pins) == len(lines)  # never the lock's CPU torch
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pydantic = [r for r in project["dependencies"] if r.startswith("pydantic==")]
    declared = [*pydantic, *extras["training"], *extras["training-gpu"]]  # what the training command imports
    pinned = dict(r.split("==") for r in declared if "==" in r)
    assert set(pinned) == {"pydantic", "torch", "transformers", "peft", "bitsandbytes"}
    for name, version in pinned.items():  # each at the project's pin, but torch
        if name != "torch":
            assert pins[name] == version, name
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().split() if "==" in line)
    for name in ("accelerate", "tokenizers", "safetensors", "huggingface_hub", "pydantic_core"):
        assert pins[name.replace("_", "-")] == lock[name], name


def test_a_deployed_base_other_than_the_stages_is_refused():
    stage = load_stages()["dev"]
    other = dataclasses.replace(outputs_of(stage), base_weights_uri=f"s3://{outputs_of(stage).bucket}/base/x/y/")
    with pytest.raises(LaunchError, match="deploy the stage first"):
        launch.plan_job(stage, other, Options(ADAPTER, DATASET, TASKS_FILE), region=stage.region, started_at=STARTED)


def test_importing_the_commands_imports_neither_the_sdk_nor_the_cdk():
    code = (
        "import sys, taskrouter.cli, taskrouter.training.cli, taskrouter.training.launch\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sagemaker', 'aws_cdk', 'infra', 'boto3', 'torch'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


# -- the command, against moto ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch, tmp_path):
    """Every client of the process on a fresh moto, with fake credentials and no profile."""
    _NO_PROXY.open(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10).read()
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(launch, "ADAPTERS_DIR", tmp_path / "adapters")
    return boto3.session.Session(region_name="us-east-1")


@pytest.fixture
def calls(monkeypatch):
    """Every API call of the launch (service, operation, parameters), as the SDK and the launcher
    made them: a handler on the session all their clients come from (botocore's
    provide-client-params event carries the request's parameters before serialization)."""
    made = []
    session_of = launch.aws_session

    def recorded(region):
        session = session_of(region)
        session.events.register(
            "provide-client-params",
            lambda params, event_name, **_: made.append(
                (*event_name.split(".")[1:3], copy.deepcopy({k: v for k, v in params.items() if k != "Body"}))
            ),
        )
        return session

    monkeypatch.setattr(launch, "aws_session", recorded)
    return made


def deploy_stack(session, stage: StageConfig, *, outputs: tuple[str, ...] = launch.STACK_OUTPUTS) -> dict[str, str]:
    """`{stage}-ModelArtifacts` on moto: the artifact bucket, its KMS key, the training role, the outputs."""
    bucket = f"taskrouter-{stage.name}-models-{ACCOUNT}-{stage.region}"
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"},
    ]}
    values = {
        "ArtifactBucketName": {"Ref": "Artifacts"},
        "ArtifactKeyArn": {"Fn::GetAtt": ["ArtifactKey", "Arn"]},
        "TrainingRoleArn": {"Fn::GetAtt": ["TrainingRole", "Arn"]},
        "BaseWeightsS3Uri": {"Fn::Sub": f"s3://${{Artifacts}}/{stage.base_weights_prefix}"},
    }
    template = {
        "Resources": {
            "ArtifactKey": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {"Version": "2012-10-17", "Statement": []}}},
            "Artifacts": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": bucket}},
            "TrainingRole": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": trust}},
        },
        "Outputs": {name: {"Value": values[name]} for name in outputs},
    }
    cloudformation = session.client("cloudformation", region_name=stage.region)
    cloudformation.create_stack(StackName=f"{stage.name}-ModelArtifacts", TemplateBody=json.dumps(template))
    described = cloudformation.describe_stacks(StackName=f"{stage.name}-ModelArtifacts")["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def launch_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["adapter", "launch", "--name", ADAPTER, "--dataset", str(DATASET), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base_command(script: str) -> list[str]:
    """The command sm_train.sh runs (the SDK's templates.py: a quoted heredoc, then eval)."""
    body = script.split("<<'SAGEMAKER_BASE_COMMAND_EOF'\n", 1)[1].split("\nSAGEMAKER_BASE_COMMAND_EOF", 1)[0]
    return shlex.split(body)


def test_launch_detached_creates_the_configured_job_with_everything_in_the_stage_bucket(aws, calls, capsys):
    stage = load_stages()["dev"]
    training = stage.training
    outputs = deploy_stack(aws, stage)
    bucket, key = outputs["ArtifactBucketName"], outputs["ArtifactKeyArn"]

    before = datetime.now(timezone.utc).replace(microsecond=0)
    code, out, err = launch_cli(capsys, "--stage", "dev", "--max-steps", "300", "--detach")
    assert (code, err) == (0, "")
    name = re.search(r"training job (\S+) started in us-east-1", out)[1]
    assert re.fullmatch(rf"taskrouter-dev-{ADAPTER}-\d{{8}}-\d{{6}}", name) and len(name) <= 63
    assert before <= datetime.strptime(name[-15:], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc) <= datetime.now(timezone.utc)
    assert f"--training-job-name {name}" in out and not (launch.ADAPTERS_DIR / f"{ADAPTER}.json").exists()
    job_root = f"s3://{bucket}/training/{name}"

    job = aws.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert job["RoleArn"] == outputs["TrainingRoleArn"]
    assert job["ResourceConfig"]["InstanceType"] == training.instance_type == "ml.g5.2xlarge"
    assert job["ResourceConfig"]["InstanceCount"] == 1
    assert "VolumeKmsKeyId" not in job["ResourceConfig"]  # CreateTrainingJob refuses one on NVMe (g5)
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {
        "MaxRuntimeInSeconds": training.max_run_hours * 3600, "MaxWaitTimeInSeconds": training.max_wait_hours * 3600,
    }
    assert job["CheckpointConfig"] == {"S3Uri": f"{job_root}/checkpoints/", "LocalPath": "/opt/ml/checkpoints"}
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{bucket}/training/"
    assert job["OutputDataConfig"]["KmsKeyId"] == key
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"{job_root}/output/model.tar.gz"
    assert job["AlgorithmSpecification"]["TrainingImage"] == (
        f"763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:{training.image_tag}"
    )
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in job["InputDataConfig"]}
    assert set(channels) == {"train", "base", "code", "sm_drivers"}
    assert channels["train"]["S3Uri"] == f"{job_root}/input/train"
    assert channels["base"]["S3Uri"] == outputs["BaseWeightsS3Uri"] == f"s3://{bucket}/{stage.base_weights_prefix}"
    assert channels["code"]["S3Uri"] == f"{job_root}/input/code"
    assert channels["sm_drivers"]["S3Uri"] == f"{job_root}/input/sm_drivers"
    assert all(source["S3DataType"] == "S3Prefix" for source in channels.values())

    # the container runs the SDK's driver, which runs the training command from the code channel
    spec = job["AlgorithmSpecification"]
    assert spec["ContainerEntrypoint"] == ["/bin/bash"]
    assert spec["ContainerArguments"][-1].endswith("/opt/ml/input/data/sm_drivers/sm_train.sh")
    s3 = aws.client("s3")
    prefix = f"training/{name}/input/"
    script = s3.get_object(Bucket=bucket, Key=f"{prefix}sm_drivers/sm_train.sh")["Body"].read().decode()
    assert "cd /opt/ml/input/data/code" in script and "install_requirements.py requirements.txt" in script
    command = base_command(script)
    assert command[:5] == ["python3", "-m", "taskrouter.cli", "adapter", "train"]
    parsed = train_parser().parse_args(command[5:])
    assert (parsed.dataset, parsed.base_model, parsed.out) == (
        "/opt/ml/input/data/train/example.jsonl", "/opt/ml/input/data/base", "/opt/ml/model",
    )
    assert (parsed.checkpoint_dir, parsed.checkpoint_every, parsed.archive, parsed.max_steps) == (
        "/opt/ml/checkpoints", training.checkpoint_every_steps, False, 300,
    )

    # what was uploaded: in the stage's bucket alone, under the job's folder, under the artifact key
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [bucket]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(k.startswith(prefix) for k in keys)
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}train/example.jsonl")["Body"].read() == DATASET.read_bytes()
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}train/tasks.json")["Body"].read() == TASKS_FILE.read_bytes()
    assert f"{prefix}code/taskrouter/training/train.py" in keys
    requirements = s3.get_object(Bucket=bucket, Key=f"{prefix}code/requirements.txt")["Body"].read().decode()
    assert requirements.splitlines()[1:] == launch.job_requirements("2.8.0")
    for object_key in keys:
        head = s3.head_object(Bucket=bucket, Key=object_key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key), object_key

    # the calls: the stack's outputs, uploads, the job; no bucket made or probed, no IAM, no STS
    operations = {(service, operation) for service, operation, _ in calls}
    assert operations == {
        ("cloudformation", "DescribeStacks"), ("s3", "PutObject"),
        ("sagemaker", "CreateTrainingJob"), ("sagemaker", "DescribeTrainingJob"),
    }
    assert {params["Bucket"] for service, _, params in calls if service == "s3"} == {bucket}
    # moto keeps no Environment nor Tags of a training job (moto/sagemaker/models.py FakeTrainingJob):
    # those are read from the request the SDK sent
    (request,) = [params for _, operation, params in calls if operation == "CreateTrainingJob"]
    assert request["TrainingJobName"] == name and request["Environment"]["HF_HUB_OFFLINE"] == "1"
    assert {(t["Key"], t["Value"]) for t in request["Tags"]} == {("taskrouter:stage", "dev"), ("taskrouter:adapter", ADAPTER)}


def test_launch_waits_for_the_job_then_writes_its_manifest_once(aws, calls, capsys, monkeypatch):
    stage = stage_with({"instance_type": "ml.p3.2xlarge", "spot": False})  # EBS only, on demand
    monkeypatch.setattr(config, "load_stages", lambda: {"dev": stage})
    outputs = deploy_stack(aws, stage)

    code, out, err = launch_cli(capsys, "--stage", "dev", "--rank", "8")
    assert (code, err) == (0, "")
    name = re.search(r"training job (\S+) started", out)[1]
    job = aws.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert job["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == outputs["ArtifactKeyArn"]  # an EBS volume takes the key
    assert job["EnableManagedSpotTraining"] is False
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": stage.training.max_run_hours * 3600}

    manifest_file = launch.ADAPTERS_DIR / f"{ADAPTER}.json"
    manifest = json.loads(manifest_file.read_text())
    assert config.AdapterManifest.model_validate(manifest).base_model == stage.base_model
    assert manifest["adapter"] == {"method": "qlora", "rank": 8, "archive_s3_uri": job["ModelArtifacts"]["S3ModelArtifacts"]}
    assert f"training job {name} completed" in out and f"manifest written to {manifest_file}" in out
    assert "npx cdk deploy 'dev/*'" in out and f'router_adapter = "{ADAPTER}"' in out
    assert "TASKROUTER_SAGEMAKER_COMPONENT=taskrouter-dev-sales-router-v3" in out

    manifest_file.write_text('{"kept": true}\n')  # a second job leaves an existing manifest alone
    first = datetime.strptime(name[-15:], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    while datetime.now(timezone.utc) < first + timedelta(seconds=1):  # its own name: a second later
        time.sleep(0.05)
    code, out, _ = launch_cli(capsys, "--stage", "dev", "--rank", "8")
    assert code == 0 and manifest_file.read_text() == '{"kept": true}\n'
    assert "exists and is left as it is" in out and '"archive_s3_uri"' in out


def test_a_stage_not_deployed_is_told_in_one_line(aws, calls, capsys):
    code, out, err = launch_cli(capsys, "--stage", "dev", "--detach")
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert "stack dev-ModelArtifacts is not deployed in us-east-1: deploy the stage first (npx cdk deploy 'dev/*')" in err
    assert [operation for _, operation, _ in calls] == ["DescribeStacks"]


def test_a_stack_without_the_training_outputs_is_told(aws, calls, capsys):
    deploy_stack(aws, load_stages()["dev"], outputs=("ArtifactBucketName", "ArtifactKeyArn"))
    code, _, err = launch_cli(capsys, "--stage", "dev", "--detach")
    assert code == 1 and err.count("\n") == 1
    assert "has no output TrainingRoleArn, BaseWeightsS3Uri: deploy the stage again" in err


def test_no_credentials_are_told_in_one_line(aws, calls, capsys, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to fall back on
    code, out, err = launch_cli(capsys, "--stage", "dev", "--detach")
    assert (code, out) == (1, "") and err.count("\n") == 1 and "no AWS credentials: sign in" in err


def test_a_missing_launch_extra_is_told_with_the_install_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sagemaker.train", None)  # as if sagemaker-train were not installed
    code, _, err = launch_cli(capsys, "--stage", "dev", "--detach")
    assert code == 1 and err == "taskrouter adapter launch: sagemaker.train is missing: pip install 'taskrouter[launch]'\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--stage", "qa"], "--stage 'qa' is not a stage of infra/stages.toml (dev, prod)"),
    (["--stage", "dev", "--rank", "128"], "--rank 128 is over serving.json's max_lora_rank 64"),
    (["--stage", "dev", "--name", "Not_An_Adapter"], "the adapter's manifest: name: String should match pattern"),
    (["--stage", "dev", "--name", "x" * 33], "an adapter's name may have at most 32"),
])
def test_what_the_stage_could_not_take_is_refused_before_any_aws_call(aws, calls, capsys, args, message):
    code = main(["adapter", "launch", "--name", ADAPTER, "--dataset", str(DATASET), *args])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and message in err
    assert calls == []


def test_a_dataset_labelled_outside_the_task_list_is_refused_before_any_aws_call(aws, calls, capsys, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"tasks": [{"name": "follow_up_email", "description": "e-mails"}]}))
    code = main(["adapter", "launch", "--stage", "dev", "--name", ADAPTER, "--dataset", str(DATASET), "--tasks", str(tasks)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "are not tasks of tasks.json" in err and calls == []
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x", "messages": [{"role": "user", "content": "hi"}]}\n')
    code = main(["adapter", "launch", "--stage", "dev", "--name", ADAPTER, "--dataset", str(broken)])
    err = capsys.readouterr().err
    assert code == 1 and "broken.jsonl:1:" in err and calls == []
