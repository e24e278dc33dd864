"""A stage with adapters: one trained here (its `.tar.gz` shipped by `cdk deploy` itself), one left
in S3 by a training job; the router pointed at the first. The committed stages serve the base alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from aws_cdk import App, Environment

from infra import model_artifacts
from infra.app import FEATURE_FLAGS, build_app
from infra.config import ConfigError, load_adapter_manifests, load_serving, load_stages
from infra.model_artifacts import BASE_SHAPES, DEPLOYMENT_MEMORY_MIB, deployment_storage_mib
from infra.nag import unacknowledged_findings
from infra.stage import TaskRouterStage
from tests.adapters import make_adapter
from tests.infra.test_resources import (
    alarm_minutes_of_a_slow_start,
    assert_log_groups_outlive_their_writers,
    assert_wakes_the_base_as_aws_guide_does,
    copies_while_waking,
)

S3_ARCHIVE = "s3://trained-adapters-bucket/jobs/router-b/output/adapter.tar.gz"
# What router-a was trained on (its training manifest's tasks.names): the router's adapter must say.
ROUTER_A_TASKS = ["meeting_recap", "follow_up_email", "crm_update"]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    dev = load_stages()["dev"]
    trained = make_adapter(folder, "router-a", dev, tasks=ROUTER_A_TASKS)
    in_s3 = make_adapter(folder, "router-b", dev, s3_uri=S3_ARCHIVE)
    config = dev.model_copy(update={"adapters": [str(trained), str(in_s3)], "router_adapter": "router-a"})
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app({"dev": config}, outdir=str(outdir))
    app.synth()  # stops on an unacknowledged cdk-nag finding
    (stage,) = [child for child in app.node.children if isinstance(child, TaskRouterStage)]
    assembly = stage.synth()
    templates = {s.hierarchical_id.split("/")[-1]: s.template for s in assembly.stacks}
    return config, templates, outdir, Path(assembly.directory), folder


def _of_type(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_one_adapter_component_each_on_the_base_and_the_router_pointed_at_the_configured_one(adapted):
    config, templates, *_ = adapted
    components = _of_type(templates["ModelHosting"], "AWS::SageMaker::InferenceComponent")
    names = {c["Properties"]["InferenceComponentName"]: c for c in components.values()}
    assert set(names) == {"taskrouter-dev-base", "taskrouter-dev-router-a", "taskrouter-dev-router-b"}
    for name in ("taskrouter-dev-router-a", "taskrouter-dev-router-b"):
        assert names[name]["Properties"]["Specification"]["BaseInferenceComponentName"] == "taskrouter-dev-base"
    assert names["taskrouter-dev-router-b"]["Properties"]["Specification"]["Container"]["ArtifactUrl"] == S3_ARCHIVE
    router = next(iter(_of_type(templates["Api"], "AWS::Lambda::Function").values()))
    variables = router["Properties"]["Environment"]["Variables"]
    assert variables["TASKROUTER_SAGEMAKER_COMPONENT"] == "taskrouter-dev-router-a"
    # what it serves, and what that was trained on (sorted): a live task outside them is unseen
    assert variables["TASKROUTER_ADAPTER_NAME"] == "router-a"
    assert variables["TASKROUTER_ADAPTER_TASKS"] == ",".join(sorted(ROUTER_A_TASKS))
    metrics = [
        next(m["MetricStat"]["Metric"] for m in alarm["Properties"]["Metrics"] if "MetricStat" in m)
        if "Metrics" in alarm["Properties"] else alarm["Properties"]
        for alarm in _of_type(templates["Monitoring"], "AWS::CloudWatch::Alarm").values()
    ]
    latency_alarms = {
        d["Value"] for m in metrics if m.get("MetricName") == "ModelLatency" for d in m["Dimensions"]
    }
    assert latency_alarms == set(names)  # every component: the base and each adapter
    # the teacher's agreement is judged for the adapter the router serves
    agreement = [m for m in metrics if m.get("MetricName") == "TeacherAgreement"]
    assert agreement and all({"Name": "adapter", "Value": "router-a"} in m["Dimensions"] for m in agreement)
    wakes = [a["Properties"] for a in _of_type(templates["ModelHosting"], "AWS::CloudWatch::Alarm").values()
             if "NoCapacityInvocationFailures" in json.dumps(a)]
    watched = [wake["Dimensions"][0]["Value"] for wake in wakes]
    assert sorted(watched) == sorted(names)  # a refusal on any component wakes the base: one alarm each
    for wake, component in zip(wakes, watched):
        assert_wakes_the_base_as_aws_guide_does(templates["ModelHosting"], wake, component)


def test_the_alarms_of_every_component_firing_together_start_one_copy(adapted):
    _, templates, *_ = adapted
    invoked = alarm_minutes_of_a_slow_start(alarms=3)  # the base's, router-a's and router-b's, each minute
    assert copies_while_waking(templates["ModelHosting"], invoked) == [1] * len(invoked)


def test_each_adapter_component_logs_into_a_group_created_before_and_deleted_after_it(adapted):
    _, templates, *_ = adapted
    hosting = templates["ModelHosting"]
    assert_log_groups_outlive_their_writers(hosting)  # the endpoint, the base and both adapters
    assert len(_of_type(hosting, "AWS::Logs::LogGroup")) == 4
    statements = [s for p in _of_type(hosting, "AWS::IAM::Policy").values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert not [s for s in statements if "logs:CreateLogGroup" in json.dumps(s["Action"])]


def test_a_trained_archive_is_shipped_by_cdk_deploy_as_a_tar_gz_at_a_key_of_its_digest(adapted):
    config, templates, _, assembly_dir, folder = adapted
    digest = hashlib.sha256((folder / "router-a.tar.gz").read_bytes()).hexdigest()
    hosting = templates["ModelHosting"]
    components = _of_type(hosting, "AWS::SageMaker::InferenceComponent")
    trained = next(c for c in components.values() if c["Properties"]["InferenceComponentName"] == "taskrouter-dev-router-a")
    url = json.dumps(trained["Properties"]["Specification"]["Container"]["ArtifactUrl"])
    assert url.startswith('{"Fn::Join": ["", ["s3://"') and f'/adapters/router-a/{digest}/adapter.tar.gz"' in url
    # shipped by the stateful artifact stack, beside its bucket, which the hosting stack deploys after
    (deployment,) = _of_type(templates["ModelArtifacts"], "Custom::CDKBucketDeployment").values()
    assert deployment["Properties"]["DestinationBucketKeyPrefix"] == f"adapters/router-a/{digest}/"
    assert deployment["Properties"]["Prune"] is False  # earlier versions stay for a rollback
    assert deployment["Properties"]["DestinationBucketName"] == {"Ref": next(iter(
        k for k in _of_type(templates["ModelArtifacts"], "AWS::S3::Bucket") if k.startswith("Artifacts")
    ))}
    cloud = json.loads((assembly_dir / "manifest.json").read_text())["artifacts"]
    hosting_id = next(k for k in cloud if "ModelHosting" in k and cloud[k]["type"] == "aws:cloudformation:stack")
    assert any("ModelArtifacts" in dep and not dep.endswith(".assets") for dep in cloud[hosting_id]["dependencies"])
    # the asset cdk deploy uploads is a folder holding the archive, unchanged
    manifest = json.loads(next(assembly_dir.glob("*ModelArtifacts*.assets.json")).read_text())
    staged = [assembly_dir / f["source"]["path"] for f in manifest["files"].values() if f["source"].get("packaging") == "zip"]
    holding = [p for p in staged if (p / "adapter.tar.gz").exists()]
    assert len(holding) == 1 and (holding[0] / "adapter.tar.gz").read_bytes() == (folder / "router-a.tar.gz").read_bytes()
    assert sorted(path.name for path in holding[0].iterdir()) == ["adapter.tar.gz"]


def test_the_endpoint_reads_exactly_the_two_archives(adapted):
    _, templates, *_ = adapted
    statements = [
        s for policy in _of_type(templates["ModelHosting"], "AWS::IAM::Policy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Action"] == "s3:GetObject" or s["Action"] == ["s3:GetObject"]
    ]
    resources = [json.dumps(r) for s in statements for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])]
    archives = [r for r in resources if "/base/" not in r]  # besides the base's weights (tests/infra/test_resources.py)
    assert len(archives) == 2 and len(resources) == 3
    assert any("trained-adapters-bucket/jobs/router-b/output/adapter.tar.gz" in r for r in archives)
    assert any("/adapters/router-a/" in r for r in archives) and not any("*" in r for r in archives)


def test_cdk_nag_stays_clean_with_adapters(adapted):
    *_, outdir, _, _ = adapted
    assert unacknowledged_findings(outdir / "validation-report.json") == []


def test_cfn_lint_stays_clean_with_adapters(adapted):
    from cfnlint.api import ManualArgs, lint_file

    config, _, _, assembly_dir, _ = adapted
    for template_file in assembly_dir.glob("*.template.json"):
        matches = lint_file(template_file, config=ManualArgs(regions=[config.region]))
        assert [str(m) for m in matches if m.rule.severity == "error"] == [], template_file.name


def test_the_archive_deployment_holds_the_largest_adapter_the_stage_serves(adapted):
    """The BucketDeployment's handler copies the asset's zip into /tmp and extracts the archive beside it
    (aws-cdk-lib, bucket-deployment-handler): its /tmp (`ephemeral_storage_size`, default 512 MiB, aws-cdk-lib
    aws-s3-deployment README "Size Limits") holds twice a rank-max_lora_rank archive of the base, which the
    defaults could not (~282 MiB at rank 64: twice is over 512 MiB)."""
    config, templates, *_ = adapted
    serving = load_serving()
    shape = BASE_SHAPES[config.base_model.id]
    # infra/model_artifacts.py's arithmetic for Qwen2.5-1.5B, every projection, float32
    assert shape.adapter_bytes(1) == 28 * 41_216 * 4
    assert shape.adapter_bytes(64) == 295_436_288
    largest = shape.adapter_bytes(serving.max_lora_rank)
    handlers = [f["Properties"] for k, f in _of_type(templates["ModelArtifacts"], "AWS::Lambda::Function").items()
                if k.startswith("CustomCDKBucketDeployment")]
    assert len(handlers) == 1
    (handler,) = handlers
    assert handler["MemorySize"] == DEPLOYMENT_MEMORY_MIB >= 1024
    storage_mib = handler["EphemeralStorage"]["Size"]
    assert storage_mib == deployment_storage_mib(config, serving) and storage_mib % 512 == 0
    assert storage_mib * 2**20 >= 2 * largest * 1.25 and storage_mib > 512
    assert 2 * shape.adapter_bytes(64) > 512 * 2**20  # what failed with the defaults


def test_an_archive_the_deployment_cannot_hold_is_refused_at_synth(adapted, monkeypatch):
    config, *_ = adapted
    monkeypatch.setattr(model_artifacts, "deployment_storage_mib", lambda stage, serving: 0)
    with pytest.raises(ConfigError, match=r"router-a: .* does not fit twice in the adapter deployment's /tmp"):
        model_artifacts.ModelArtifactsStack(
            App(context=FEATURE_FLAGS), "Probe", stage=config, manifests=load_adapter_manifests(config),
            serving=load_serving(), env=Environment(region=config.region),
        )


def test_an_unknown_base_has_no_archive_size_and_is_refused_naming_the_fix(adapted):
    config, *_ = adapted
    other = config.model_copy(update={"base_model": config.base_model.model_copy(update={"id": "Example/Other-7B"})})
    with pytest.raises(ConfigError, match="no adapter size is known for Example/Other-7B: add its shapes"):
        deployment_storage_mib(other, load_serving())
