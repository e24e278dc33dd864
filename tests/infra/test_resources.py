"""Fine-grained assertions on the security and sizing properties of every component."""

from __future__ import annotations

import fnmatch
import json
import re

import pytest
from aws_cdk.assertions import Match, Template

from infra.app import build_app
from infra.config import load_serving

SERVING = load_serving()


def _resources(template: dict, resource_type: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def _statements(template: dict) -> list[dict]:
    return [
        statement
        for policy in _resources(template, "AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _arn(value) -> str:
    """An ARN as text, whether literal or an Fn::Join; references render as ${Name}."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return "${%s}" % value["Ref"]
    if "Fn::GetAtt" in value:
        return "${%s.%s}" % tuple(value["Fn::GetAtt"])
    return "".join(_arn(part) for part in value["Fn::Join"][1])


def _actions(statement: dict) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


# --- registry --------------------------------------------------------------------------------


def test_registry_table_is_on_demand_encrypted_and_recoverable(stage):
    table = stage.template("Registry")
    table.resource_count_is("AWS::DynamoDB::Table", 1)
    table.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "SSESpecification": {"SSEEnabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            # list all = Query on the partition, get one = GetItem: no Scan needed
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        },
    )


def test_registry_is_protected_in_prod_only(stage):
    table = next(iter(_resources(stage.templates["Registry"], "AWS::DynamoDB::Table").values()))
    retained = stage.config.retain_on_delete
    assert stage.config.name != "prod" or retained
    assert table["DeletionPolicy"] == ("Retain" if retained else "Delete")
    assert table["Properties"]["DeletionProtectionEnabled"] is retained


def test_registry_stack_holds_the_table_alone(stage):
    types = {v["Type"] for v in stage.templates["Registry"]["Resources"].values()}
    assert types == {"AWS::DynamoDB::Table"}


# --- model artifacts -------------------------------------------------------------------------


def test_artifact_buckets_are_private_encrypted_and_ssl_only(stage):
    template = stage.template("ModelArtifacts")
    template.resource_count_is("AWS::S3::Bucket", 2)
    encryption = {
        logical_id: bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        for logical_id, bucket in _resources(stage.templates["ModelArtifacts"], "AWS::S3::Bucket").items()
    }
    # the artifacts under the stage's key; the access logs SSE-S3 (the only encryption S3's log delivery takes)
    assert sorted(encryption.values()) == ["AES256", "aws:kms"]
    template.all_resources_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        },
    )
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )


# --- model hosting ---------------------------------------------------------------------------


def test_model_serves_the_staged_base_weights_from_s3_with_the_regional_dlc_image_isolated(stage):
    """The base's pinned revision, uncompressed under its folder of the artifact bucket (CreateModel's
    ModelDataSource: S3Prefix, CompressionType None, the URI a folder), never from the hub: no
    HF_MODEL_ID, and the containers isolated from the network (model and endpoint configuration)."""
    base = stage.config.base_model
    hosting = stage.template("ModelHosting")
    hosting.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "EnableNetworkIsolation": True,
            "PrimaryContainer": {
                "Image": f"763104351884.dkr.ecr.{stage.config.region}.amazonaws.com/djl-inference:{stage.config.lmi_image_tag}",
                "ModelDataSource": {
                    "S3DataSource": {
                        "S3Uri": Match.any_value(),
                        "S3DataType": "S3Prefix",
                        "CompressionType": "None",
                    }
                },
                "Environment": Match.object_like(
                    {"HF_HUB_OFFLINE": "1", "OPTION_ENABLE_LORA": "true", "OPTION_ENABLE_PREFIX_CACHING": "true"}
                ),
            },
        },
    )
    model = next(iter(_resources(stage.templates["ModelHosting"], "AWS::SageMaker::Model").values()))
    container = model["Properties"]["PrimaryContainer"]
    assert "HF_MODEL_ID" not in container["Environment"] and "OPTION_REVISION" not in container["Environment"]
    uri = json.dumps(container["ModelDataSource"]["S3DataSource"]["S3Uri"])
    assert f"/base/{base.id}/{base.revision}/" in uri  # a folder: SageMaker copies every object under it
    hosting.has_resource_properties("AWS::SageMaker::EndpointConfig", {"EnableNetworkIsolation": True})
    assert stage.config.network_isolation  # both committed stages; prod must be


def test_the_base_weights_are_staged_on_deploy_once_per_revision(stage):
    """A CodeBuild project copies the pinned revision into the bucket, started by a custom resource whose
    identity is the revision (a new one replaces it, the same one finds its marker and stops)."""
    base = stage.config.base_model
    artifacts = stage.template("ModelArtifacts")
    staged = next(iter(_resources(stage.templates["ModelArtifacts"], "Custom::BaseWeights").values()))
    assert staged["Properties"]["ModelId"] == base.id and staged["Properties"]["Revision"] == base.revision
    project = next(iter(_resources(stage.templates["ModelArtifacts"], "AWS::CodeBuild::Project").values()))["Properties"]
    variables = {v["Name"]: v.get("Value") for v in project["Environment"]["EnvironmentVariables"]}
    assert variables["MODEL_ID"] == base.id and variables["REVISION"] == base.revision
    assert variables["PREFIX"] == f"base/{base.id}/{base.revision}/"
    assert variables["MARKER"] == f"base/{base.id}/{base.revision}.staged"  # outside the folder the endpoint copies
    spec = project["Source"]["BuildSpec"]
    assert "head-object" in spec and "snapshot_download" in spec and "aws s3 sync" in spec  # run: test_base_weights_script.py
    assert variables["WEIGHTS"] == "/tmp/weights" and spec.startswith('{\n  "version": "0.2"')
    assert spec.index("aws s3 sync") < spec.index("s3://$BUCKET/$MARKER")  # the marker last
    assert "EncryptionKey" in project and project["TimeoutInMinutes"] == 50  # ends before the deploy stops waiting (60)
    # queued (an account whose CodeBuild limit lets no build run) and running, it ends within that hour:
    # not CodeBuild's default 8 hours of queue
    assert project["QueuedTimeoutInMinutes"] == 5 and project["QueuedTimeoutInMinutes"] + project["TimeoutInMinutes"] < 60
    # the endpoint's model waits for the staging: its stack deploys after the artifacts'
    hosting_stack_deps = stage.dependencies["ModelHosting"]
    assert "ModelArtifacts" in hosting_stack_deps


def test_training_jobs_get_a_role_of_their_own_folders_and_the_launcher_finds_it(stage):
    """`taskrouter adapter launch` reads the stack's outputs; its jobs' role reads the base and training/,
    writes training/ only, under the artifact key."""
    template = stage.templates["ModelArtifacts"]
    assert {"ArtifactBucketName", "ArtifactKeyArn", "BaseWeightsS3Uri", "TrainingRoleArn"} <= set(template["Outputs"])
    roles = _resources(template, "AWS::IAM::Role")
    (training_role,) = [logical for logical, role in roles.items() if logical.startswith("TrainingRole")]
    statements = [
        statement
        for policy in _resources(template, "AWS::IAM::Policy").values()
        if policy["Properties"]["Roles"] == [{"Ref": training_role}]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    by_action = {action: s for s in statements for action in _actions(s)}
    base = stage.config.base_model
    writes = {_arn(r) for r in _as_list(by_action["s3:PutObject"]["Resource"])}
    reads = {_arn(r) for r in _as_list(by_action["s3:GetObject"]["Resource"])}
    assert writes == {"${Artifacts82DD59A1.Arn}/training/*"}
    assert reads == {"${Artifacts82DD59A1.Arn}/training/*", f"${{Artifacts82DD59A1.Arn}}/base/{base.id}/{base.revision}/*"}
    assert {"kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant"} <= set(by_action)
    assert _arn(by_action["ecr:BatchGetImage"]["Resource"]) == (
        f"arn:aws:ecr:{stage.config.region}:763104351884:repository/pytorch-training"
    )
    unscoped = {a for s in statements if "*" in _as_list(s["Resource"]) for a in _actions(s)}
    assert unscoped == {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}  # no resource-level form
    assert by_action["cloudwatch:PutMetricData"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}
    }
    assert "sagemaker:" not in json.dumps(statements) and "iam:PassRole" not in json.dumps(statements)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_the_artifact_bucket_is_encrypted_with_the_stage_key(stage):
    (name,) = [b["Properties"]["BucketName"] for b in _resources(stage.templates["ModelArtifacts"], "AWS::S3::Bucket").values()
               if "BucketName" in b["Properties"]]
    assert _arn(name) == f"taskrouter-{stage.config.name}-models-${{AWS::AccountId}}-{stage.config.region}"
    stage.template("ModelArtifacts").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [Match.object_like({
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": Match.any_value()},
                "BucketKeyEnabled": True,
            })]},
        },
    )


def test_model_leaves_lmi_in_vllm_async_mode(stage):
    """djl-serving 0.36.0-lmi18-dlc, LmiConfigRecommender.setRollingBatch: only an unset rolling batch
    gives vLLM's async handler, which takes the router's chat-completions requests."""
    model = next(iter(_resources(stage.templates["ModelHosting"], "AWS::SageMaker::Model").values()))
    environment = model["Properties"]["PrimaryContainer"]["Environment"]
    assert "OPTION_ROLLING_BATCH" not in environment and "OPTION_ENTRYPOINT" not in environment


def test_endpoint_config_sizes_the_gpu_variant_and_its_startup(stage):
    config = stage.config
    props = next(iter(_resources(stage.templates["ModelHosting"], "AWS::SageMaker::EndpointConfig").values()))[
        "Properties"
    ]
    variant = props["ProductionVariants"][0]
    assert variant["InstanceType"] == config.gpu_instance_type
    assert variant["InitialInstanceCount"] == config.gpu_instance_count
    assert "ModelName" not in variant  # an endpoint of inference components has no model on its variant
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] >= 600  # a 7B model loads for minutes
    assert variant["ModelDataDownloadTimeoutInSeconds"] >= 600
    assert "ExecutionRoleArn" in props


def test_nvme_instance_types_get_no_kms_key_id(stage):
    """ml.g5 volumes are instance-store NVMe, hardware-encrypted: SageMaker refuses a KmsKeyId for them."""
    assert not stage.config.volume_kms_supported
    template = stage.template("ModelHosting")
    template.has_resource_properties("AWS::SageMaker::EndpointConfig", {"KmsKeyId": Match.absent()})
    template.resource_count_is("AWS::KMS::Key", 0)


def test_ebs_instance_types_get_their_volume_encrypted_with_a_rotated_kms_key(tmp_path):
    from tests.infra.conftest import STAGES

    dev = STAGES["dev"].model_copy(update={"gpu_instance_type": "ml.p3.2xlarge"})
    app = build_app({"dev": dev}, outdir=str(tmp_path))
    stack = next(s for s in app.synth().get_nested_assembly("assembly-dev").stacks if s.stack_name == "dev-ModelHosting")
    template = Template.from_json(stack.template)
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    key_id = next(iter(_resources(stack.template, "AWS::KMS::Key")))
    template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig", {"KmsKeyId": {"Fn::GetAtt": [key_id, "Arn"]}}
    )


def test_the_committed_stage_serves_the_base_component_alone(stage):
    """No adapter yet: one command deploys the stage, and the router asks the base model."""
    config = stage.config
    components = _resources(stage.templates["ModelHosting"], "AWS::SageMaker::InferenceComponent")
    (base,) = components.values()
    base_spec = base["Properties"]["Specification"]
    assert base["Properties"]["InferenceComponentName"] == f"taskrouter-{config.name}-base"
    assert base_spec["ComputeResourceRequirements"] == {
        "NumberOfAcceleratorDevicesRequired": SERVING.accelerators_per_copy,
        "MinMemoryRequiredInMb": SERVING.min_memory_mb,
    }
    assert base_spec["StartupParameters"]["ContainerStartupHealthCheckTimeoutInSeconds"] >= 600
    assert base["Properties"]["RuntimeConfig"] == {"CopyCount": config.gpu_instance_count}
    router = next(iter(_resources(stage.templates["Api"], "AWS::Lambda::Function").values()))
    assert router["Properties"]["Environment"]["Variables"]["TASKROUTER_SAGEMAKER_COMPONENT"] == f"taskrouter-{config.name}-base"


def test_execution_role_pulls_only_the_dlc_image_writes_only_its_logs(stage):
    config = stage.config
    template = stage.templates["ModelHosting"]
    statements = _statements(template)
    by_action = {action: s for s in statements for action in _actions(s)}
    assert set(by_action) == {
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetAuthorizationToken",
        "logs:CreateLogStream",  # no logs:CreateLogGroup: the stack owns every group
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
        "cloudwatch:PutMetricData",
        "s3:GetObject",  # the base's weights (test_model_serves_the_staged_base_weights...)
        "s3:ListBucket",
        "kms:Decrypt",  # the artifact key
    }
    assert by_action["cloudwatch:PutMetricData"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": ["/aws/sagemaker/Endpoints", "/aws/sagemaker/InferenceComponents"]}
    }
    base = config.base_model
    assert _arn(by_action["s3:GetObject"]["Resource"]).endswith(f"-models-${{AWS::AccountId}}-{config.region}/base/{base.id}/{base.revision}/*")
    assert by_action["s3:ListBucket"]["Condition"] == {"StringLike": {"s3:prefix": [f"base/{base.id}/{base.revision}/*"]}}
    # AWS's registry account, not this one
    assert _arn(by_action["ecr:BatchGetImage"]["Resource"]) == (
        f"arn:aws:ecr:{config.region}:763104351884:repository/djl-inference"
    )
    log_groups = _resources(template, "AWS::Logs::LogGroup")  # (with adapters: tests/infra/test_adapters.py)
    assert sorted(g["Properties"]["LogGroupName"] for g in log_groups.values()) == sorted(
        [
            f"/aws/sagemaker/Endpoints/taskrouter-{config.name}",
            f"/aws/sagemaker/InferenceComponents/taskrouter-{config.name}-base",
        ]
    )
    # streams in the endpoint's group, by its documented name, and this stage's component groups by their
    # prefix; no group created (logs:CreateLogGroup, logs:*): the stack owns them all
    assert [s for s in statements if "logs:CreateLogGroup" in _actions(s) or "logs:*" in _actions(s)] == []
    (endpoint_logs,) = [k for k, g in log_groups.items() if g["Properties"]["LogGroupName"].startswith("/aws/sagemaker/Endpoints/")]
    endpoint_grant, component_grant = by_action["logs:PutLogEvents"]["Resource"]
    assert endpoint_grant == {"Fn::GetAtt": [endpoint_logs, "Arn"]}  # its ARN ends in :*, the group's streams
    assert _arn(component_grant) == (
        f"arn:aws:logs:{config.region}:${{AWS::AccountId}}:log-group:/aws/sagemaker/InferenceComponents/taskrouter-{config.name}-*"
    )
    assert [s["Resource"] for s in statements if "logs:PutLogEvents" in _actions(s)] == [[endpoint_grant, component_grant]]
    granted = _arn(component_grant).split(":log-group:")[1]
    for group in log_groups.values():
        name = group["Properties"]["LogGroupName"]
        assert name == f"/aws/sagemaker/Endpoints/taskrouter-{config.name}" or fnmatch.fnmatchcase(name, granted)
    assert fnmatch.fnmatchcase(f"/aws/sagemaker/InferenceComponents/taskrouter-{config.name}-an-adapter", granted)
    other = "prod" if config.name != "prod" else "dev"
    assert not fnmatch.fnmatchcase(f"/aws/sagemaker/InferenceComponents/taskrouter-{other}-base", granted)
    assert not fnmatch.fnmatchcase("/aws/sagemaker/TrainingJobs", granted)
    # fixed names in a stateless stack: never left behind by a rolled-back deploy
    assert {group["DeletionPolicy"] for group in log_groups.values()} == {"Delete"}
    roles = _resources(template, "AWS::IAM::Role")
    assert all("ManagedPolicyArns" not in role["Properties"] for role in roles.values())


def _references(value) -> set[str]:
    """The logical ids a property value names: Ref, Fn::GetAtt and Fn::Sub's ${Name}."""
    if isinstance(value, list):
        return set().union(*map(_references, value))
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, inner in value.items():
        if key == "Ref":
            found.add(inner)
        elif key == "Fn::GetAtt":
            found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
        elif key == "Fn::Sub":
            text = inner[0] if isinstance(inner, list) else inner
            found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
        found |= _references(inner)
    return found


def created_before(template: dict, logical: str) -> set[str]:
    """Every resource CloudFormation creates before `logical` and deletes after it: what it depends on,
    by DependsOn or by a reference (Ref, GetAtt, Sub), transitively (CloudFormation Template Reference,
    "DependsOn attribute": if A refers to B, "Resource B is created before resource A. Resource A is
    deleted before resource B.")."""
    resources = template["Resources"]
    found: set[str] = set()
    pending = [logical]
    while pending:
        resource = resources[pending.pop()]
        depends = resource.get("DependsOn", [])
        direct = ({depends} if isinstance(depends, str) else set(depends)) | _references(resource.get("Properties", {}))
        for name in (direct & set(resources)) - found:
            found.add(name)
            pending.append(name)
    return found


def assert_log_groups_outlive_their_writers(template: dict) -> None:
    """The endpoint and each inference component log into a group of their own name, which the stack
    creates before them and deletes after them: SageMaker never finds its group missing, so it never
    makes one the next deploy would collide with (it may not: the role has no logs:CreateLogGroup)."""
    groups = {g["Properties"]["LogGroupName"]: k for k, g in _resources(template, "AWS::Logs::LogGroup").items()}
    writers = {
        f"/aws/sagemaker/Endpoints/{e['Properties']['EndpointName']}": k
        for k, e in _resources(template, "AWS::SageMaker::Endpoint").items()
    } | {
        f"/aws/sagemaker/InferenceComponents/{c['Properties']['InferenceComponentName']}": k
        for k, c in _resources(template, "AWS::SageMaker::InferenceComponent").items()
    }
    assert set(groups) == set(writers)  # one group each, none for anything else
    for name, writer in writers.items():
        assert groups[name] in created_before(template, writer), f"{writer} does not depend on its log group {name}"


def test_sagemaker_log_groups_outlive_the_endpoint_and_components_that_write_them(stage):
    template = stage.templates["ModelHosting"]
    assert_log_groups_outlive_their_writers(template)  # (with adapters: tests/infra/test_adapters.py)
    assert not [s for s in _statements(template) if "logs:CreateLogGroup" in _actions(s)]
    # the checker sees a missing dependency: the base component cut loose from its group
    loose = json.loads(json.dumps(template))
    (base,) = [k for k, r in _resources(loose, "AWS::SageMaker::InferenceComponent").items()]
    group = next(k for k, g in _resources(loose, "AWS::Logs::LogGroup").items() if "InferenceComponents" in g["Properties"]["LogGroupName"])
    for resource in loose["Resources"].values():  # the role's policy names every group: name none
        if resource["Type"] == "AWS::IAM::Policy":
            resource["Properties"] = {}
    loose["Resources"][base]["DependsOn"] = [d for d in loose["Resources"][base].get("DependsOn", []) if d != group]
    with pytest.raises(AssertionError, match="does not depend on its log group"):
        assert_log_groups_outlive_their_writers(loose)


# --- API and router --------------------------------------------------------------------------


def test_router_function_runtime_tracing_and_environment(stage):
    template = stage.template("Api")
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "taskrouter.handlers.router.handler",
            "Runtime": "python3.13",  # the bundle ships bytecode of CPython 3.13 (infra/bundle.py)
            "MemorySize": 1769,
            "Architectures": ["arm64"],
            "TracingConfig": {"Mode": "Active"},
            "LoggingConfig": Match.object_like({"LogFormat": "JSON"}),
            "Environment": {
                "Variables": Match.object_like(
                    {
                        **stage.config.timeout_environment(),  # every strategy's budget
                        "TASKROUTER_SAGEMAKER_ENDPOINT": f"taskrouter-{stage.config.name}",
                        "TASKROUTER_OPENAI_SECRET_ARN": Match.any_value(),
                    }
                )
            },
        },
    )
    function = next(iter(_resources(stage.templates["Api"], "AWS::Lambda::Function").values()))
    variables = function["Properties"]["Environment"]["Variables"]
    assert not any("API_KEY" in name for name in variables), "the OpenAI key comes from Secrets Manager only"


@pytest.mark.parametrize("handler", ["taskrouter.handlers.router.handler", "taskrouter.handlers.registry.handler"])
def test_router_and_registry_bound_the_catalogue_by_the_serving_length(stage, handler):
    """Both derive the catalogue budget from the endpoint's serving length (serving.json), which the
    registry enforces on writes and the router on reads."""
    functions = _resources(stage.templates["Api"], "AWS::Lambda::Function").values()
    function = next(f for f in functions if f["Properties"]["Handler"] == handler)
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["TASKROUTER_SERVING_MAX_TOKENS"] == str(load_serving().max_model_len)


def test_router_role_is_least_privilege(stage):
    template = stage.templates["Api"]
    router_role_id = next(k for k in _resources(template, "AWS::IAM::Role") if k.startswith("RouterRole"))
    policies = [
        p for p in _resources(template, "AWS::IAM::Policy").values() if p["Properties"]["Roles"] == [{"Ref": router_role_id}]
    ]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    granted = {action: s["Resource"] for s in statements for action in _actions(s)}
    assert set(granted) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sagemaker:InvokeEndpoint",
        "secretsmanager:GetSecretValue",
        "ssm:GetParameter",
        "dynamodb:Query",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    } | ({"lambda:InvokeFunction"} if stage.config.capture.measures else set())  # the teacher (test_capture.py)
    assert _arn(granted["sagemaker:InvokeEndpoint"]) == (
        f"arn:aws:sagemaker:{stage.config.region}:${{AWS::AccountId}}:endpoint/taskrouter-{stage.config.name}"
    )
    secret = granted["secretsmanager:GetSecretValue"]["Fn::ImportValue"]
    assert secret.startswith(f"{stage.config.name}-Operations:") and "OpenAIApiKey" in secret
    assert len(_resources(stage.templates["Operations"], "AWS::SecretsManager::Secret")) == 1
    assert "OpsMode" in json.dumps(granted["ssm:GetParameter"])
    table_arn = granted["dynamodb:Query"]
    assert table_arn["Fn::ImportValue"].startswith(f"{stage.config.name}-Registry:")  # the table's own ARN
    assert "Tasks" in table_arn["Fn::ImportValue"]
    assert all(s["Effect"] == "Allow" for s in statements)


def test_ops_mode_parameter_starts_primary_first_and_takes_only_known_modes(stage):
    stage.template("Operations").has_resource_properties(
        "AWS::SSM::Parameter",
        {
            "Name": f"/taskrouter/{stage.config.name}/ops-mode",
            "Value": "primary_first",
            "AllowedPattern": "^(primary_first|openai_only)$",
        },
    )


def _role_grants(template: dict, role_prefix: str) -> dict[str, object]:
    role_id = next(k for k in _resources(template, "AWS::IAM::Role") if k.startswith(role_prefix))
    policies = [
        p for p in _resources(template, "AWS::IAM::Policy").values() if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    return {
        action: statement["Resource"]
        for policy in policies
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in _actions(statement)
    }


def test_registry_function_writes_the_table_and_nothing_else(stage):
    grants = _role_grants(stage.templates["Api"], "RegistryRole")
    assert set(grants) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    assert grants["dynamodb:UpdateItem"]["Fn::ImportValue"].startswith(f"{stage.config.name}-Registry:")


def test_request_validators_check_bodies_against_the_contract_models(stage):
    template = stage.templates["Api"]
    validator_id = next(iter(_resources(template, "AWS::ApiGateway::RequestValidator")))
    validator = template["Resources"][validator_id]["Properties"]
    assert (validator["ValidateRequestBody"], validator["ValidateRequestParameters"]) == (True, True)
    models = {m["Properties"]["Name"]: m for k, m in _resources(template, "AWS::ApiGateway::Model").items()}
    assert set(models) == {"RouteRequest", "TaskBody"}
    assert models["RouteRequest"]["Properties"]["Schema"]["required"] == ["conversation"]  # current_task optional
    validated = [
        (m["Properties"]["HttpMethod"], m["Properties"].get("RequestModels"))
        for m in _resources(template, "AWS::ApiGateway::Method").values()
        if m["Properties"].get("RequestValidatorId") == {"Ref": validator_id}
    ]
    assert sorted(method for method, _ in validated) == ["DELETE", "POST", "PUT"]
    bodies = {method: json.dumps(body) for method, body in validated if body}
    assert "RouteRequestModel" in bodies["POST"] and "TaskBodyModel" in bodies["PUT"]
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in _resources(template, "AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["BAD_REQUEST_BODY"]["StatusCode"] == "400"
    assert '"code": "invalid_request"' in responses["BAD_REQUEST_BODY"]["ResponseTemplates"]["application/json"]


def test_tasks_reads_take_the_api_key_and_writes_take_iam(stage):
    template = stage.templates["Api"]
    resources = {k: v["Properties"] for k, v in _resources(template, "AWS::ApiGateway::Resource").items()}
    paths = {k: props["PathPart"] for k, props in resources.items()}
    methods = {}
    for method in _resources(template, "AWS::ApiGateway::Method").values():
        props = method["Properties"]
        resource = props["ResourceId"].get("Ref")
        methods[(paths.get(resource, "/"), props["HttpMethod"])] = props
    assert methods[("tasks", "GET")]["ApiKeyRequired"] is True
    assert methods[("{name}", "GET")]["ApiKeyRequired"] is True
    for write in ("PUT", "DELETE"):
        assert methods[("{name}", write)]["AuthorizationType"] == "AWS_IAM"
    assert methods[("route", "POST")]["ApiKeyRequired"] is True


def test_router_timeout_covers_registry_primary_and_fallback_within_api_gateway(stage):
    function = next(iter(_resources(stage.templates["Api"], "AWS::Lambda::Function").values()))
    config = stage.config
    timeout = function["Properties"]["Timeout"]
    for budget in config.budgets.values():
        assert timeout * 1000 >= budget.primary_timeout_ms + budget.fallback_timeout_ms + 2000
    assert timeout < 29


def test_gateway_failures_answer_in_the_contract_error_shape(stage):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in _resources(stage.templates["Api"], "AWS::ApiGateway::GatewayResponse").values()
    }
    unavailable = responses["DEFAULT_5XX"]
    assert unavailable["StatusCode"] == "503"
    assert unavailable["ResponseParameters"] == {"gatewayresponse.header.Retry-After": "'2'"}
    assert json.loads(unavailable["ResponseTemplates"]["application/json"])["error"]["code"] == "no_backend_available"
    too_large = responses["REQUEST_TOO_LARGE"]
    assert too_large["StatusCode"] == "413"
    assert json.loads(too_large["ResponseTemplates"]["application/json"])["error"]["code"] == "request_too_large"


def test_api_gateway_account_logging_role_outlives_the_stage(stage):
    roles = _resources(stage.templates["Api"], "AWS::IAM::Role")
    cloudwatch_role = next(r for k, r in roles.items() if k.startswith("ApiCloudWatchRole"))
    assert cloudwatch_role["DeletionPolicy"] == "Retain"


def test_route_requires_an_api_key_and_the_usage_plan_throttles(stage):
    template = stage.template("Api")
    template.has_resource_properties("AWS::ApiGateway::Method", {"HttpMethod": "POST", "ApiKeyRequired": True})
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Throttle": {"RateLimit": stage.config.api_rate_limit_rps, "BurstLimit": stage.config.api_burst_limit},
            "ApiStages": [Match.object_like({"Stage": Match.any_value()})],
        },
    )
    template.has_resource_properties("AWS::ApiGateway::UsagePlanKey", {"KeyType": "API_KEY"})


def test_api_stage_logs_json_access_logs_traces_and_never_logs_bodies(stage):
    props = next(iter(_resources(stage.templates["Api"], "AWS::ApiGateway::Stage").values()))["Properties"]
    assert props["TracingEnabled"] is True
    access_format = json.loads(props["AccessLogSetting"]["Format"])
    assert {"requestId", "status", "requestTime"} <= set(access_format)
    assert props["MethodSettings"] == [
        {
            "DataTraceEnabled": False,
            "HttpMethod": "*",
            "LoggingLevel": "ERROR",
            "MetricsEnabled": True,
            "ResourcePath": "/*",
            "ThrottlingBurstLimit": stage.config.api_burst_limit,
            "ThrottlingRateLimit": stage.config.api_rate_limit_rps,
        }
    ]


@pytest.mark.parametrize("stack_id", ["ModelHosting", "Api"])
def test_every_log_group_has_the_stage_retention(stage, stack_id):
    groups = _resources(stage.templates[stack_id], "AWS::Logs::LogGroup")
    assert groups
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == stage.config.log_retention_days


def test_api_gateway_execution_logs_are_owned_before_the_stage_writes_them(stage):
    template = stage.templates["Api"]
    groups = _resources(template, "AWS::Logs::LogGroup")
    execution = next(k for k, g in groups.items() if "API-Gateway-Execution-Logs_" in json.dumps(g["Properties"]))
    api_stage = next(iter(_resources(template, "AWS::ApiGateway::Stage").values()))
    assert execution in api_stage["DependsOn"]


def test_no_log_group_anywhere_lacks_a_retention(stage):
    for template in stage.templates.values():
        for group in _resources(template, "AWS::Logs::LogGroup").values():
            assert "RetentionInDays" in group["Properties"]


# --- monitoring ------------------------------------------------------------------------------


def test_alarm_topic_is_encrypted_ssl_only_and_mails_the_stage_addresses(stage):
    template = stage.template("Monitoring")
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )
    topic_policy = next(iter(_resources(stage.templates["Monitoring"], "AWS::SNS::TopicPolicy").values()))
    allow = [s for s in topic_policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allow) == 1
    assert (allow[0]["Action"], allow[0]["Principal"]) == ("sns:Publish", {"Service": "cloudwatch.amazonaws.com"})
    assert allow[0]["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":alarm:*" in _arn(allow[0]["Condition"]["ArnLike"]["aws:SourceArn"])
    subscriptions = [s for s in _resources(stage.templates["Monitoring"], "AWS::SNS::Subscription").values()
                     if s["Properties"]["Protocol"] == "email"]  # besides the alarm handler (test_operations.py)
    assert sorted(s["Properties"]["Endpoint"] for s in subscriptions) == sorted(stage.config.alarm_emails)
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [Match.object_like({"Principal": {"Service": "cloudwatch.amazonaws.com"}})]
                )
            },
        },
    )


def _alarm_metric(alarm: dict) -> tuple[str, str, str]:
    props = alarm["Properties"]
    if "Metrics" not in props:  # a plain metric alarm
        return props["Namespace"], props["MetricName"], props.get("ExtendedStatistic") or props["Statistic"]
    stats = [m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m]
    # a math expression over several metrics: their names joined, e.g. model errors = 4xx from the model + 5xx
    return stats[0]["Metric"]["Namespace"], "+".join(sorted(s["Metric"]["MetricName"] for s in stats)), stats[0]["Stat"]


def _all_alarms(template: dict) -> list[tuple[tuple[str, str, str], dict]]:
    return [(_alarm_metric(a), a["Properties"]) for a in _resources(template, "AWS::CloudWatch::Alarm").values()]


def _alarm_dimensions(props: dict) -> dict[str, str]:
    metric = next(m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m) if "Metrics" in props else props
    return {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def _judged_apart(alarm_name: str) -> bool:
    """Alarms held to their own periods and datapoints: capture's and the teacher's (test_capture.py),
    the alarm handling's warnings (test_operations.py), the escalated share (test_escalation.py)."""
    return any(part in alarm_name for part in ("-Capture-", "-Teacher-", "-AlarmHandling-", "-Escalation-"))


def test_alarms_cover_latency_errors_and_throttles_and_notify_the_topic(stage):
    template = stage.templates["Monitoring"]
    topic_id = next(iter(_resources(template, "AWS::SNS::Topic")))
    alarms = {
        _alarm_metric(a): a["Properties"]
        for a in _resources(template, "AWS::CloudWatch::Alarm").values()
        if "-Registry-" not in a["Properties"]["AlarmName"] and not _judged_apart(a["Properties"]["AlarmName"])
    }
    budgets = stage.config.budgets
    backstop = max(budget.latency_ms for budget in budgets.values())  # the API mixes every strategy
    expected = {
        ("AWS/ApiGateway", "Latency", "p90"): backstop,  # milliseconds
        ("AWS/ApiGateway", "5XXError", "Sum"): 0,
        ("AWS/Lambda", "Duration", "p99"): backstop,
        ("AWS/Lambda", "Errors", "Sum"): 0,
        ("AWS/Lambda", "Throttles", "Sum"): 0,
        ("TaskRouter", "Fallback", "Average"): 0.5,  # share of decisions made by the fallback
        ("TaskRouter", "UnexpectedError", "Sum"): 0,
        ("TaskRouter", "PrimaryFailure", "Average"): 0.25,  # share of the primary's answers that failed
        ("TaskRouter", "InvalidOutput", "Average"): 0.05,  # share of decisions whose primary answer had no allowed form
        ("AWS/ApiGateway", "4XXError", "Average"): 0.25,  # share of requests refused with a 4xx
        ("AWS/DynamoDB", "ReadThrottleEvents", "Sum"): 0,
        ("AWS/DynamoDB", "WriteThrottleEvents", "Sum"): 0,
        ("AWS/DynamoDB", "+".join(["SystemErrors"] * 9), "Sum"): 0,  # one per table operation, summed
    }
    per_component = ("DecisionLatency", "ModelLatency", "Invocation5XXErrors+InvocationModelErrors",
                     "Invocation4XXErrors+NoCapacityInvocationFailures")
    by_metric = {metric: props["Threshold"] for metric, props in alarms.items() if metric[1] not in per_component}
    assert by_metric == expected
    # each strategy held to its own budget
    latency = {
        _alarm_dimensions(props)["strategy"]: props["Threshold"]
        for metric, props in _all_alarms(template) if metric == ("TaskRouter", "DecisionLatency", "p90")
    }
    assert latency == {strategy.value: budget.latency_ms for strategy, budget in budgets.items()}
    # ModelLatency on the adapter's and the base's component (AWS does not say which one carries
    # adapter calls), in microseconds, an idle endpoint not alarming
    model = {
        _alarm_dimensions(props)["InferenceComponentName"]: props
        for metric, props in _all_alarms(template) if metric == ("AWS/SageMaker", "ModelLatency", "p90")
    }
    assert set(model) == {stage.config.base_component_name}  # each adapter's too: test_adapters.py
    slowest_primary_ms = max(budget.primary_timeout_ms for budget in budgets.values())
    for props in model.values():
        assert props["Threshold"] == slowest_primary_ms * 1000
        assert props["TreatMissingData"] == "notBreaching"
    registry_alarms = [
        a["Properties"] for a in _resources(template, "AWS::CloudWatch::Alarm").values()
        if "-Registry-" in a["Properties"]["AlarmName"]
    ]
    assert [_alarm_metric({"Properties": a}) for a in registry_alarms] == [("AWS/Lambda", "Errors", "Sum")]
    for props in [*alarms.values(), *registry_alarms]:
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["AlarmActions"] == [{"Ref": topic_id}] and props["OKActions"] == [{"Ref": topic_id}]
        assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (5, 3)  # 3 of 5: no page for one blip
    # periods: a minute where the failover needs to act soon (the primary's own health), else five
    one_minute = {"PrimaryFailure", "ModelLatency", "Invocation5XXErrors+InvocationModelErrors"}
    for (_, metric, _), props in _all_alarms(template):
        if _judged_apart(props["AlarmName"]):
            continue
        periods = {props["Period"]} if "Period" in props else {m["MetricStat"]["Period"] for m in props["Metrics"] if "MetricStat" in m}
        assert periods == ({60} if metric in one_minute else {300}), (metric, periods)


# --- scaling and rollout -----------------------------------------------------------------------


def test_copies_scale_on_invocations_within_the_stage_bounds(stage):
    config = stage.config
    template = stage.templates["ModelHosting"]
    (target,) = _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    props = target["Properties"]
    assert (props["ServiceNamespace"], props["ScalableDimension"]) == ("sagemaker", "sagemaker:inference-component:DesiredCopyCount")
    assert props["ResourceId"] == f"inference-component/taskrouter-{config.name}-base"
    assert (props["MinCapacity"], props["MaxCapacity"]) == (config.scaling.min_copies, config.scaling.max_copies)
    assert "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint" in json.dumps(props["RoleARN"])
    policies = {p["Properties"]["PolicyType"]: p["Properties"] for p in _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()}
    tracking = policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"}
    assert tracking["TargetValue"] == config.scaling.invocations_per_copy
    variant = next(iter(_resources(template, "AWS::SageMaker::EndpointConfig").values()))["Properties"]["ProductionVariants"][0]
    assert variant["ManagedInstanceScaling"] == {  # room for the copy a rolling update adds
        "Status": "ENABLED", "MinInstanceCount": config.scaling.min_copies, "MaxInstanceCount": config.scaling.max_copies + 1,
    }
    wake_alarms = [a for a in _resources(template, "AWS::CloudWatch::Alarm").values()
                   if "NoCapacityInvocationFailures" in json.dumps(a["Properties"])]
    if config.scaling.min_copies == 0:  # dev: to zero when idle, and back on the first request
        (wake,) = wake_alarms  # one a component: the base alone here (each adapter's: test_adapters.py)
        assert_wakes_the_base_as_aws_guide_does(template, wake["Properties"], f"taskrouter-{config.name}-base")
    else:  # prod: never under two copies on two instances
        assert wake_alarms == [] and "StepScaling" not in policies
        assert config.scaling.min_copies >= 2 and variant["ManagedInstanceScaling"]["MinInstanceCount"] >= 2


def assert_wakes_the_base_as_aws_guide_does(template: dict, alarm: dict, component: str) -> None:
    """The alarm of AWS's scale-to-zero guide (SageMaker Developer Guide, "Scale an endpoint to zero
    instances": put-metric-alarm on NoCapacityInvocationFailures, period 60, statistic Sum, threshold 1,
    one datapoint of one, the step scaling policy as its action), on the first refused request."""
    assert "Metrics" not in alarm  # one metric, no math: a 30 s FILL over a one-minute metric flapped
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SageMaker", "NoCapacityInvocationFailures")
    assert alarm["Dimensions"] == [{"Name": "InferenceComponentName", "Value": component}]
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 60, 1)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"  # the first refusal, not the second
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (1, 1)
    assert alarm["TreatMissingData"] == "notBreaching"
    ((policy_id, policy),) = [(k, p["Properties"]) for k, p in _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").items()
                              if p["Properties"]["PolicyType"] == "StepScaling"]
    assert alarm["AlarmActions"] == [{"Ref": policy_id}]
    step = policy["StepScalingPolicyConfiguration"]
    assert step["MetricAggregationType"] == "Maximum"
    # one step, for any breach (at or above the threshold); its effect: copies_while_waking
    assert [set(s) for s in step["StepAdjustments"]] == [{"MetricIntervalLowerBound", "ScalingAdjustment"}]
    assert step["StepAdjustments"][0]["MetricIntervalLowerBound"] == 0


def copies_while_waking(template: dict, invoked_at_s: list[int]) -> list[int]:
    """The base's desired copies after each invocation of its wake (the step policy) at these seconds,
    starting from none, while no copy serves yet: the alarms keep invoking it every minute they stay in
    ALARM (CloudWatch User Guide, "Alarm actions": Auto Scaling actions repeat while the state lasts),
    and requests keep failing until a copy has started, minutes later.

    Application Auto Scaling applies a step as its User Guide documents ("Step scaling policies"):
    ChangeInCapacity adds the adjustment to the capacity, ExactCapacity changes the capacity to it;
    within the cooldown of a scale-out, the capacity that scale-out added counts as part of the next
    one (a step of 3 after one of 2 adds 1); a cooldown left out is 300 s (API Reference,
    StepScalingPolicyConfiguration); the result stays within the target's MinCapacity and MaxCapacity."""
    (target,) = _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    low, high = target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]
    (policy,) = [p["Properties"]["StepScalingPolicyConfiguration"]
                 for p in _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
                 if p["Properties"]["PolicyType"] == "StepScaling"]
    (step,) = policy["StepAdjustments"]
    adjustment, kind = step["ScalingAdjustment"], policy["AdjustmentType"]
    capacity, cooldown_ends, added = 0, None, 0
    copies = []
    for second in invoked_at_s:
        if kind == "ExactCapacity":
            wanted = adjustment
        elif kind == "ChangeInCapacity":
            cooling = cooldown_ends is not None and second < cooldown_ends
            wanted = capacity + (max(0, adjustment - added) if cooling else adjustment)
        else:
            raise AssertionError(f"no model of {kind}")
        new = min(max(wanted, low), high)
        if new > capacity:  # a scale-out: its cooldown starts
            cooldown_ends, added = second + policy.get("Cooldown", 300), new - capacity
        capacity = new
        copies.append(capacity)
    return copies


def alarm_minutes_of_a_slow_start(alarms: int) -> list[int]:
    """Each of `alarms` alarms invoking the wake once a minute for as long as a copy may take to start
    (its weights' download and its container's health check, each to its timeout), and an hour more for
    an instance to be found: a wake must not depend on how long that takes."""
    start_s = SERVING.model_data_download_timeout_s + SERVING.container_startup_health_check_timeout_s + 3600
    return [second for second in range(0, start_s, 60) for _ in range(alarms)]


def test_a_wake_starts_exactly_one_copy_however_often_its_alarm_fires(stage):
    template = stage.templates["ModelHosting"]
    if stage.config.scaling.min_copies > 0:  # prod: never at zero, nothing to wake
        assert not [p for p in _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
                    if p["Properties"]["PolicyType"] == "StepScaling"]
        return
    invoked = alarm_minutes_of_a_slow_start(alarms=1)
    assert copies_while_waking(template, invoked) == [1] * len(invoked)
    # the model itself: the scale-to-zero guide's own policy (ChangeInCapacity +1, cooldown 60 s) adds a
    # copy a minute into the start
    guide = json.loads(json.dumps(template))
    for policy in _resources(guide, "AWS::ApplicationAutoScaling::ScalingPolicy").values():
        if policy["Properties"]["PolicyType"] == "StepScaling":
            policy["Properties"]["StepScalingPolicyConfiguration"].update(AdjustmentType="ChangeInCapacity", Cooldown=60)
    assert copies_while_waking(guide, [0, 30, 60, 120])[:3] == [1, 1, 2]


def test_only_a_request_that_found_no_copy_can_wake_the_base(stage):
    """ExactCapacity would lower a base that has more copies, and target tracking does not block a step
    policy's scale-in (Application Auto Scaling User Guide, "Target tracking scaling policies",
    considerations). So nothing may invoke the wake while a copy serves: only alarms on
    NoCapacityInvocationFailures, which SageMaker emits when a request finds no active instance to serve
    it (SageMaker Developer Guide, "Scale an endpoint to zero instances"), of this endpoint's components
    (an adapter's copies are its base's), alone, no math; only where the base may have no copy at all.
    Target tracking keeps its scale-in: it is what takes an idle base to zero; it adds no copy while
    none serves (its metric is invocations per copy)."""
    template = stage.templates["ModelHosting"]
    policies = _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    wakes = [k for k, p in policies.items() if p["Properties"]["PolicyType"] == "StepScaling"]
    (target,) = _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    if target["Properties"]["MinCapacity"] > 0:
        assert wakes == []
        return
    (wake,) = wakes
    alarms = [a["Properties"] for a in _resources(template, "AWS::CloudWatch::Alarm").values()]
    acting = [a for a in alarms if {"Ref": wake} in a.get("AlarmActions", [])]
    components = {c["Properties"]["InferenceComponentName"] for c in _resources(template, "AWS::SageMaker::InferenceComponent").values()}
    assert sorted(a["Dimensions"][0]["Value"] for a in acting) == sorted(components)  # one alarm a component
    for alarm in acting:
        assert "Metrics" not in alarm and (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SageMaker", "NoCapacityInvocationFailures")
        assert len(alarm["Dimensions"]) == 1 and alarm["ComparisonOperator"] in ("GreaterThanThreshold", "GreaterThanOrEqualToThreshold")
        assert alarm["Threshold"] >= 1 and alarm["TreatMissingData"] == "notBreaching"  # no request, no wake
    for alarm in alarms:  # nothing wakes the base on a return to OK or on missing data
        assert {"Ref": wake} not in alarm.get("OKActions", []) + alarm.get("InsufficientDataActions", [])
    (tracking,) = [p["Properties"]["TargetTrackingScalingPolicyConfiguration"] for p in policies.values()
                   if p["Properties"]["PolicyType"] == "TargetTrackingScaling"]
    assert tracking.get("DisableScaleIn", False) is False


# Metric math functions CloudWatch documents (CloudWatch User Guide, "Using metric math"), less those it
# recommends against in alarms (AVG, MAX, MIN, SUM, STDDEV... of a single series act differently when an
# alarm fetches more datapoints than it evaluates); PutMetricAlarm refusing an expression rolls a stack back.
ALARM_MATH_FUNCTIONS = {"IF", "FILL", "ABS", "CEIL", "FLOOR", "DIFF", "RATE", "PERIOD", "LOG", "LOG10"}


def test_every_alarm_expression_uses_documented_metric_math_only(stage):
    for stack_id, template in stage.templates.items():
        for logical, alarm in _resources(template, "AWS::CloudWatch::Alarm").items():
            queries = alarm["Properties"].get("Metrics", [])
            ids = {query["Id"] for query in queries}
            for query in queries:
                expression = query.get("Expression")
                if expression is None:
                    continue
                assert "[" not in expression, f"{stack_id}/{logical}: {expression}: an array in an alarm's expression"
                functions = set(re.findall(r"([A-Z_0-9]+)\s*\(", expression))
                assert functions <= ALARM_MATH_FUNCTIONS, f"{stack_id}/{logical}: {expression}"
                names = set(re.findall(r"\b([a-z][A-Za-z0-9_]*)\b", expression))
                assert names <= ids, f"{stack_id}/{logical}: {expression} names {names - ids}"


def test_requests_refused_count_the_4xx_less_no_capacity_floored_at_zero(stage):
    """IF(TS comparison S, TS, S), a documented form, over refused - asleep (arithmetic on two series
    treats a missing value as 0: no FILL): the meaning of the former MAX([..., 0]) without its scalar."""
    template = stage.templates["Monitoring"]
    refused = [a["Properties"] for a in _resources(template, "AWS::CloudWatch::Alarm").values()
               if "RefusedRequests-" in a["Properties"]["AlarmName"]]
    assert len(refused) == 1  # the base's (each adapter's too, with adapters)
    for props in refused:
        queries = {query["Id"]: query for query in props["Metrics"]}
        returned = [query for query in queries.values() if query.get("ReturnData", True)]
        assert [query["Expression"] for query in returned] == ["IF(excess > 0, excess, 0)"]
        assert queries["excess"]["Expression"] == "refused - asleep"
        assert {queries[key]["MetricStat"]["Metric"]["MetricName"] for key in ("refused", "asleep")} == {
            "Invocation4XXErrors", "NoCapacityInvocationFailures"}
        assert {queries[key]["MetricStat"]["Stat"] for key in ("refused", "asleep")} == {"Sum"}
        assert (props["Threshold"], props["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_a_changed_base_rolls_out_one_copy_at_a_time_and_back_on_its_own_alarms(stage):
    template = stage.templates["ModelHosting"]
    (base,) = _resources(template, "AWS::SageMaker::InferenceComponent").values()
    if stage.config.scaling.min_copies < 2:  # dev: one copy or none, nothing to roll beside
        assert "DeploymentConfig" not in base["Properties"]
        return
    deployment = base["Properties"]["DeploymentConfig"]
    rolling = deployment["RollingUpdatePolicy"]
    assert rolling["MaximumBatchSize"] == {"Type": "COPY_COUNT", "Value": 1}
    assert rolling["RollbackMaximumBatchSize"] == {"Type": "COPY_COUNT", "Value": 1}
    assert rolling["WaitIntervalInSeconds"] >= 300  # longer than the alarms take to see a bad batch
    alarms = _resources(template, "AWS::CloudWatch::Alarm")  # in this stack: no stack depends on another for them
    rollback = {json.dumps(a["AlarmName"]) for a in deployment["AutoRollbackConfiguration"]["Alarms"]}
    gating = {json.dumps({"Ref": k}) for k in alarms if k.startswith(("RollbackOnModelErrors", "RollbackOnModelLatency"))}
    assert rollback == gating and len(gating) == 2


# --- cross-stack references --------------------------------------------------------------------


def test_stacks_read_each_other_through_exports_never_a_weak_reference(stage):
    """cdk.json sets `@aws-cdk/core:defaultCrossStackReferences` to "strong". A weak reference is
    `Fn::GetStackOutput`, which CloudFormation resolves only when the consuming stack is created or updated
    (CloudFormation Template Reference, `Fn::ImportValue`, its tip on `Fn::GetStackOutput`; aws-cdk-lib
    README, "Reference strength": "consuming stacks may temporarily reference a nonexistent resource until
    they are updated as well"), and `cdk deploy` skips a stack whose template did not change: a replaced
    table, secret, bucket or key would leave Api, ModelHosting or Monitoring on the old one. A strong one is
    an Export read by `Fn::ImportValue`, and "you can't modify or remove an output value that is referenced
    by another stack" (`Fn::ImportValue`, restrictions): such a replacement fails the deploy, loudly."""
    rendered = {name: json.dumps(template) for name, template in stage.templates.items()}
    assert not [name for name, text in rendered.items() if "Fn::GetStackOutput" in text]
    exported = {
        output["Export"]["Name"]: name
        for name, template in stage.templates.items()
        for output in template.get("Outputs", {}).values() if "Export" in output
    }
    imports = {name: set(re.findall(r'"Fn::ImportValue": "([^"]+)"', text)) for name, text in rendered.items()}
    read_from = {name: {exported[value] for value in values} for name, values in imports.items()}  # each one exported
    prefix = f"{stage.config.name}-"
    assert all(value.startswith(prefix) for values in imports.values() for value in values)
    # the stateful stacks' outputs reach every stateless stack that reads them
    assert {"Registry", "Operations"} <= read_from["Api"]
    assert {"Registry", "Operations"} <= read_from["Monitoring"]
    assert "ModelArtifacts" in read_from["ModelHosting"]
    for consumer, producers in read_from.items():  # and each reader deploys after what it reads
        assert producers <= stage.dependencies[consumer], (consumer, producers)
