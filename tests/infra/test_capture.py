"""Quality in production (docs/capture.md): the stage setting `capture`, checked at synth; the Capture
stack on every stage that measures (the teacher function, its deliveries table, the kill switch), with
the records' bucket, Glue table and Athena workgroup only where the stage stores them; the router's side
(environment, grants); TeacherAgreement and the other alarms, the live reliability curve; a stage that
stores nothing keeps nothing."""

from __future__ import annotations

import json
import math
import re

import pytest

import infra.capture as capture_stack
from infra.capture import ATHENA_RESULTS_PREFIX, RECORDS_PREFIX, TEACHER_MARGIN_S, TEACHER_SERVICE
from infra.config import (
    ADAPTER_TASKS_MAX_BYTES,
    ROOT,
    STAGES_FILE,
    AdapterManifest,
    CaptureConfig,
    ConfigError,
    check_deployable,
    load_serving,
    load_stages,
)
from infra.monitoring import ALARM_HANDLER_SERVICE, CAPTURE_DROPPED_RATE_ALARM
from taskrouter.datagen.harvest_command import BUCKET_OUTPUT, CAPTURE_STACK
from taskrouter.doctor.assembly import read_assembly
from tests.infra.conftest import STAGES
from tests.infra.test_operations import RUNBOOK, _sections

# The stages' own settings: a share over 0 measures, `enabled` stores (CaptureConfig.measures, .stores_records).
MEASURING = sorted(name for name, config in STAGES.items() if config.capture.share > 0)
STORING = sorted(name for name, config in STAGES.items() if config.capture.enabled)
NOT_STORING = sorted(name for name, config in STAGES.items() if not config.capture.enabled)


@pytest.fixture(params=MEASURING)
def measuring(request, synthesized):
    return synthesized.stages[request.param]


@pytest.fixture(params=STORING)
def storing(request, synthesized):
    return synthesized.stages[request.param]


@pytest.fixture(params=NOT_STORING)
def not_storing(request, synthesized):
    return synthesized.stages[request.param]


def test_every_stage_measures_and_only_dev_stores_records():
    assert MEASURING == ["dev", "prod"] and STORING == ["dev"] and NOT_STORING == ["prod"]
    assert all(STAGES[name].capture.measures for name in MEASURING)
    assert [name for name in STAGES if STAGES[name].capture.stores_records] == STORING


def _resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _one(template: dict, kind: str) -> tuple[str, dict]:
    (found,) = _resources(template, kind).items()
    return found


def _text(value) -> str:
    """A template value as text, references as ${Id} / ${Id.Attr} / ${import:Name}."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text(part) for part in value)
    if "Ref" in value:
        return "${%s}" % value["Ref"]
    if "Fn::GetAtt" in value:
        return "${%s.%s}" % tuple(value["Fn::GetAtt"])
    if "Fn::ImportValue" in value:
        return "${import:%s}" % value["Fn::ImportValue"]
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_text(part) for part in parts)
    return json.dumps(value)


def _actions(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def _resources_of(statement: dict) -> list:
    return statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]


def _role_statements(template: dict, role_id: str) -> list[dict]:
    return [
        statement
        for policy in _resources(template, "AWS::IAM::Policy").values() if policy["Properties"]["Roles"] == [{"Ref": role_id}]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _teacher(template: dict) -> str:
    return next(k for k, f in _resources(template, "AWS::Lambda::Function").items()
                if f["Properties"].get("Handler") == "taskrouter.handlers.teacher.handler")


def _capture_parts(template: dict) -> tuple[str, str, str]:
    bucket = next(k for k, b in _resources(template, "AWS::S3::Bucket").items()
                  if "LoggingConfiguration" in b["Properties"])  # the capture bucket; its log bucket has none
    key, _ = _one(template, "AWS::KMS::Key")
    return bucket, key, _teacher(template)


# --- the stage setting -----------------------------------------------------------------------------

VALID = STAGES_FILE.read_text()


def _stages_with(tmp_path, old: str, new: str):
    assert old in VALID, old
    path = tmp_path / "stages.toml"
    path.write_text(VALID.replace(old, new, 1))
    return path


def test_the_teacher_defaults_to_the_stages_model_few_shot_cot_and_redacts_both_kinds():
    for config in STAGES.values():
        assert config.capture.teacher_model == config.openai_model
    fields = {"enabled": True, "share": 0.1, "fallback_share": 0, "teacher_model": "m", "min_agreement": 0.8,
              "min_samples": 10, "retention_days": 30, "teacher_requests_per_minute": 10,
              "teacher_tokens_per_minute": 1000}
    capture = CaptureConfig(**fields)
    assert (capture.teacher_strategy.value, capture.redact, capture.unseen_share, capture.send_timeout_ms) == (
        "few_shot_cot", ["email", "phone"], 1.0, 100)
    assert capture.redact_environment == "email,phone"
    assert CaptureConfig(**fields, redact=[]).redact_environment == "none"


def test_a_stage_measures_wherever_its_share_is_over_0_and_sends_only_the_uniform_sample_where_it_stores_nothing():
    fields = {"share": 0.05, "fallback_share": 0.1, "unseen_share": 1.0, "teacher_model": "m", "min_agreement": 0.8,
              "min_samples": 10, "retention_days": 30, "teacher_requests_per_minute": 10, "teacher_tokens_per_minute": 1000}
    storing = CaptureConfig(enabled=True, **fields)
    assert (storing.measures, storing.stores_records, storing.router_shares()) == (True, True, (0.05, 0.1, 1.0))
    measuring_only = CaptureConfig(enabled=False, **fields)
    assert (measuring_only.measures, measuring_only.stores_records) == (True, False)
    assert measuring_only.router_shares() == (0.05, 0.0, 0.0)  # what the other draws take, nothing would keep
    assert not CaptureConfig(enabled=False, **{**fields, "share": 0}).measures  # share 0: no teacher at all
    with pytest.raises(ValueError, match="share must be over 0 where records are stored"):
        CaptureConfig(enabled=True, **{**fields, "share": 0})


def test_a_teacher_model_of_its_own_is_kept(tmp_path):
    stages = load_stages(_stages_with(tmp_path, "[dev.capture]\n", '[dev.capture]\nteacher_model = "gpt-4.1"\n'))
    assert (stages["dev"].capture.teacher_model, stages["prod"].capture.teacher_model) == ("gpt-4.1", "gpt-4.1-mini")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # [dev.capture] comes first in stages.toml: the first match is dev's
        ("\nshare = 0.2", "\nshare = 1.5", r"\[dev\]: capture\.share: Input should be less than or equal to 1"),
        ("\nshare = 0.2", "\nshare = 0", r"\[dev\]: capture: .*share must be over 0 where records are stored \(enabled = true\)"),
        ("fallback_share = 0.05", "fallback_share = -0.1", r"\[dev\]: capture\.fallback_share: Input should be greater than or equal to 0"),
        ("unseen_share = 1.0", "unseen_share = 2", r"\[dev\]: capture\.unseen_share: Input should be less than or equal to 1"),
        ("min_agreement = 0.8", "min_agreement = 80", r"\[dev\]: capture\.min_agreement: Input should be less than or equal to 1"),
        ("min_samples = 20", "min_samples = 0", r"\[dev\]: capture\.min_samples: Input should be greater than or equal to 1"),
        ("retention_days = 30", "retention_days = 0", r"\[dev\]: capture\.retention_days: Input should be greater than or equal to 1"),
        ('redact = ["email", "phone"]', 'redact = ["email", "address"]', r"\[dev\]: capture\.redact\[1\]: Input should be 'email' or 'phone'"),
        ('redact = ["email", "phone"]', 'redact = ["email", "email"]', r"\[dev\]: capture\.redact: .*repeats a kind"),
        ("teacher_requests_per_minute = 30", "teacher_requests_per_minute = 0",
         r"\[dev\]: capture\.teacher_requests_per_minute: Input should be greater than or equal to 1"),
        ("teacher_tokens_per_minute = 150000", "teacher_tokens_per_minute = -1",
         r"\[dev\]: capture\.teacher_tokens_per_minute: Input should be greater than or equal to 1"),
        ("send_timeout_ms = 100", "send_timeout_ms = 5000", r"\[dev\]: capture\.send_timeout_ms: Input should be less than or equal to 1000"),
        ('teacher_strategy = "few_shot_cot"', 'teacher_strategy = "think_hard"', r"\[dev\]: capture\.teacher_strategy: Input should be"),
        ("enabled = true", 'enabled = "sometimes"', r"\[dev\]: capture\.enabled: Input should be a valid boolean"),
        ("enabled = true", "enabled = true\ncolour = 3", r"\[dev\]: capture\.colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_capture_setting_is_refused_naming_its_field(tmp_path, old, new, message):
    with pytest.raises(ConfigError, match=message):
        load_stages(_stages_with(tmp_path, old, new))


def test_a_stage_without_capture_is_refused(tmp_path):
    start = VALID.index("[dev.capture]")
    end = VALID.index("[dev.budgets.zero_shot]")
    with pytest.raises(ConfigError, match=r"\[dev\]: capture: Field required"):
        load_stages(_stages_with(tmp_path, VALID[start:end], ""))


# --- the router's adapter and its task list ---------------------------------------------------------


def _manifest(**changes) -> AdapterManifest:
    dev = STAGES["dev"]
    fields = {"name": "router-a", "base_model": dev.base_model.model_dump(),
              "adapter": {"method": "lora", "rank": 16, "archive_s3_uri": "s3://bucket-x/a/adapter.tar.gz"}}
    return AdapterManifest.model_validate({**fields, **changes})


def test_an_adapter_lists_the_tasks_it_was_trained_on_sorted():
    assert _manifest(tasks=["meeting_recap", "crm_update"]).tasks == ["crm_update", "meeting_recap"]
    assert _manifest().tasks is None  # an adapter the router does not serve may omit them


@pytest.mark.parametrize(
    ("tasks", "message"),
    [([], "at least 1 item"), (["none"], "'none' is reserved"), (["Bad-Name"], "must match"),
     (["crm_update", "crm_update"], "a task name repeats")],
)
def test_a_bad_task_list_is_refused(tasks, message):
    with pytest.raises(ValueError, match=message):
        _manifest(tasks=tasks)


def test_a_router_adapter_without_its_task_list_is_refused_at_synth():
    """Without it the router cannot tell a live task the adapter never saw: UnseenTasks and the unseen
    share would count every task, or none."""
    dev = STAGES["dev"].model_copy(update={"adapters": ["router-a.json"], "router_adapter": "router-a"})
    with pytest.raises(ConfigError, match=r"router_adapter 'router-a': its manifest lists no `tasks`"):
        check_deployable(dev, [_manifest()], load_serving())
    check_deployable(dev, [_manifest(tasks=["crm_update"])], load_serving())  # listed: fine
    served_only = dev.model_copy(update={"router_adapter": None})
    check_deployable(served_only, [_manifest()], load_serving())  # served beside, not routed to: fine


def test_a_task_list_over_the_routers_environment_is_refused():
    dev = STAGES["dev"].model_copy(update={"adapters": ["router-a.json"], "router_adapter": "router-a"})
    many = [f"task_{index:03d}_{'x' * 50}" for index in range(40)]
    assert len(",".join(many)) > ADAPTER_TASKS_MAX_BYTES
    with pytest.raises(ConfigError, match=rf"40 task names take \d+ bytes, over the {ADAPTER_TASKS_MAX_BYTES}"):
        check_deployable(dev, [_manifest(tasks=many)], load_serving())


# --- the Capture stack -----------------------------------------------------------------------------


def test_harvest_finds_the_bucket_by_the_stack_and_output_it_reads(storing, synthesized):
    name = storing.config.name
    assembly = read_assembly(name, storing.config.region, synthesized.outdir, inputs=[])
    assert CAPTURE_STACK.format(stage=name) in {stack.stack_name for stack in assembly.stacks}
    outputs = storing.templates["Capture"]["Outputs"]
    bucket, _, _ = _capture_parts(storing.templates["Capture"])
    assert outputs[BUCKET_OUTPUT]["Value"] == {"Ref": bucket} and BUCKET_OUTPUT == "CaptureBucketName"
    assert outputs["CaptureParameter"]["Value"]["Ref"].startswith("Switch")


def test_the_capture_bucket_is_kms_encrypted_tls_only_private_and_expires(storing):
    template = storing.templates["Capture"]
    config = storing.config
    bucket_id, key_id, _ = _capture_parts(template)
    bucket = template["Resources"][bucket_id]
    props = bucket["Properties"]
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]}}
    assert encryption["BucketKeyEnabled"] is True
    assert template["Resources"][key_id]["Properties"]["EnableKeyRotation"] is True
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert "VersioningConfiguration" not in props  # a noncurrent version would outlive retention_days
    rules = {rule.get("Prefix"): rule for rule in props["LifecycleConfiguration"]["Rules"]}
    # the teacher's failed events (Lambda's on-failure destination) hold conversations too: the same expiry
    for prefix in (RECORDS_PREFIX, ATHENA_RESULTS_PREFIX, capture_stack.FAILED_EVENTS_PREFIX):
        assert (rules[prefix]["ExpirationInDays"], rules[prefix]["Status"]) == (config.capture.retention_days, "Enabled")
    assert rules[None]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # server access logs, as the artifact bucket's, to an SSE-S3 bucket of the same stack
    logs = template["Resources"][props["LoggingConfiguration"]["DestinationBucketName"]["Ref"]]["Properties"]
    assert logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    policy = next(p["Properties"] for p in _resources(template, "AWS::S3::BucketPolicy").values()
                  if p["Properties"]["Bucket"] == {"Ref": bucket_id})
    deny = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny == [{"Action": "s3:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}, "Effect": "Deny",
                     "Principal": {"AWS": "*"}, "Resource": deny[0]["Resource"]}]
    assert bucket["DeletionPolicy"] == ("Retain" if config.retain_on_delete else "Delete")


def _documented_fields() -> list[str]:
    """The record's fields, as docs/capture.md's table names them."""
    doc = (ROOT / "docs" / "capture.md").read_text()
    table = doc.split("\n## The record\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_0-9]+)` \|", table, flags=re.MULTILINE)


def test_the_glue_table_reads_the_records_as_json_lines_over_projected_partitions(storing):
    template = storing.templates["Capture"]
    bucket_id, _, _ = _capture_parts(template)
    _, database = _one(template, "AWS::Glue::Database")
    assert database["Properties"]["DatabaseInput"]["Name"] == f"taskrouter_{storing.config.name}_capture"
    _, table = _one(template, "AWS::Glue::Table")
    table_input = table["Properties"]["TableInput"]
    storage = table_input["StorageDescriptor"]
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert storage["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    assert _text(storage["Location"]) == f"s3://${{{bucket_id}}}/records/"
    columns = [column["Name"] for column in storage["Columns"]]
    assert columns == _documented_fields() and len(columns) == 18  # every field of the record, in its order
    types = {column["Name"]: column["Type"] for column in storage["Columns"]}
    assert (types["requested_tasks"], types["running_task"]) == (
        "array<string>", "struct<name:string,description:string,examples:array<string>>")  # schema 2's
    assert types["teacher"] == "struct<model:string,strategy:string,answer:string,agrees:boolean,latency_ms:double,error:string>"
    assert types["sampling"] == "struct<probability:double,uniform:boolean,reason:string>"
    assert [(k["Name"], k["Type"]) for k in table_input["PartitionKeys"]] == [("day", "string"), ("hour", "int")]
    parameters = table_input["Parameters"]
    # Athena computes the partitions from the key layout: no crawler, no MSCK REPAIR TABLE
    assert parameters["projection.enabled"] == "true"
    assert (parameters["projection.day.type"], parameters["projection.day.format"]) == ("date", "yyyy-MM-dd")
    assert parameters["projection.day.range"] == f"NOW-{storing.config.capture.retention_days}DAYS,NOW"
    assert (parameters["projection.hour.type"], parameters["projection.hour.range"], parameters["projection.hour.digits"]) == (
        "integer", "0,23", "2")
    # the layout of docs/capture.md: records/date=YYYY-MM-DD/hour=HH/<id>.json
    assert _text(parameters["storage.location.template"]) == f"s3://${{{bucket_id}}}/records/date=${{day}}/hour=${{hour}}/"
    assert parameters["has_encrypted_data"] is False  # SSE-KMS is read transparently; true means client-side
    assert not _resources(template, "AWS::Glue::Crawler")


def test_the_athena_workgroup_writes_results_beside_the_records_under_the_same_key(storing):
    template = storing.templates["Capture"]
    bucket_id, key_id, _ = _capture_parts(template)
    _, workgroup = _one(template, "AWS::Athena::WorkGroup")
    props = workgroup["Properties"]
    assert props["Name"] == f"taskrouter-{storing.config.name}-capture"
    configuration = props["WorkGroupConfiguration"]
    assert configuration["EnforceWorkGroupConfiguration"] is True  # a client's own settings cannot override it
    results = configuration["ResultConfiguration"]
    assert _text(results["OutputLocation"]) == f"s3://${{{bucket_id}}}/athena-results/"
    assert results["EncryptionConfiguration"] == {"EncryptionOption": "SSE_KMS", "KmsKey": {"Fn::GetAtt": [key_id, "Arn"]}}
    assert results["ExpectedBucketOwner"] == {"Ref": "AWS::AccountId"}


def test_the_teacher_runs_one_at_a_time_never_retried(measuring):
    template = measuring.templates["Capture"]
    config = measuring.config
    teacher_id = _teacher(template)
    props = template["Resources"][teacher_id]["Properties"]
    assert props["ReservedConcurrentExecutions"] == 1  # the teacher's bound (the doctor counts it)
    assert props["Timeout"] == math.ceil(config.capture.teacher_timeout_ms / 1000) + TEACHER_MARGIN_S
    assert props["Timeout"] * 1000 > config.capture.teacher_timeout_ms
    assert props.get("TracingConfig", {}).get("Mode", "PassThrough") == "PassThrough"  # no X-Ray: no wildcard
    _, invoke = _one(template, "AWS::Lambda::EventInvokeConfig")
    # never tried again (it would pay the teacher twice); a failed or expired event's invocation record, which
    # holds the redacted conversation, goes to the capture bucket (KMS, TLS only, expiring with the records)
    # where the stage stores records, and nowhere where it stores none (AsyncEventsDropped is its trace)
    expected = {"FunctionName": {"Ref": teacher_id}, "MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 3600,
                "Qualifier": "$LATEST"}
    if config.capture.stores_records:
        bucket_id, _, _ = _capture_parts(template)
        expected["DestinationConfig"] = {"OnFailure": {"Destination": {"Fn::GetAtt": [bucket_id, "Arn"]}}}
    assert invoke["Properties"] == expected


def test_the_teacher_environment(measuring):
    template = measuring.templates["Capture"]
    config = measuring.config
    teacher_id = _teacher(template)
    variables = dict(template["Resources"][teacher_id]["Properties"]["Environment"]["Variables"])  # the session's: a copy
    secret = variables.pop("TASKROUTER_OPENAI_SECRET_ARN")
    assert secret["Fn::ImportValue"].startswith(f"{config.name}-Operations:") and "OpenAIApiKey" in secret["Fn::ImportValue"]
    deliveries_id, _ = _one(template, "AWS::DynamoDB::Table")
    stored = {"TASKROUTER_CAPTURE_BUCKET": {"Ref": _capture_parts(template)[0]}} if config.capture.stores_records else {}
    assert variables == {
        "POWERTOOLS_SERVICE_NAME": TEACHER_SERVICE,
        "POWERTOOLS_METRICS_NAMESPACE": "TaskRouter",
        **stored,  # none where the stage stores no records: the teacher labels and publishes only
        "TASKROUTER_TEACHER_MODEL": config.capture.teacher_model,
        "TASKROUTER_TEACHER_STRATEGY": "few_shot_cot",
        "TASKROUTER_TEACHER_TIMEOUT_MS": str(config.capture.teacher_timeout_ms),
        "TASKROUTER_TEACHER_REQUESTS_PER_MINUTE": str(config.capture.teacher_requests_per_minute),
        "TASKROUTER_TEACHER_TOKENS_PER_MINUTE": str(config.capture.teacher_tokens_per_minute),
        "TASKROUTER_OPENAI_MODEL": config.openai_model,
        "TASKROUTER_TEACHER_DELIVERIES_TABLE": {"Ref": deliveries_id},
    }


def test_the_teacher_role_may_use_its_secret_and_deliveries_and_write_records_only_where_they_are_stored(measuring):
    template = measuring.templates["Capture"]
    teacher_id = _teacher(template)
    role_id = template["Resources"][teacher_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    assert "ManagedPolicyArns" not in template["Resources"][role_id]["Properties"]
    statements = _role_statements(template, role_id)
    granted = {action: sorted(_text(r) for r in _resources_of(s)) for s in statements for action in _actions(s)}
    logs_id = template["Resources"][teacher_id]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    deliveries_id, _ = _one(template, "AWS::DynamoDB::Table")
    (secret,) = granted["secretsmanager:GetSecretValue"]
    expected = {
        "logs:CreateLogStream": [f"${{{logs_id}.Arn}}"],
        "logs:PutLogEvents": [f"${{{logs_id}.Arn}}"],
        "secretsmanager:GetSecretValue": [secret],
        # Powertools' idempotency: the conditional put, the read of a duplicate, the completion, the delete
        # of a failed invocation's item; on the one table, no Scan, Query or batch
        **{action: [f"${{{deliveries_id}.Arn}}"] for action in
           ("dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")},
    }
    if measuring.config.capture.stores_records:
        bucket_id, key_id, _ = _capture_parts(template)
        expected |= {
            # the records, and Lambda's delivery of a failed event with this role (the Lambda Developer Guide:
            # an S3 destination needs s3:PutObject and s3:ListBucket, kms:GenerateDataKey for its KMS key)
            "s3:PutObject": [f"${{{bucket_id}.Arn}}/aws/lambda/async/*", f"${{{bucket_id}.Arn}}/records/*"],  # no read
            "s3:ListBucket": [f"${{{bucket_id}.Arn}}"],  # names, never content
            "kms:GenerateDataKey": [f"${{{key_id}.Arn}}"],  # SSE-KMS's data key for a write; no decrypt
        }
    assert granted == expected  # where nothing is stored: no S3, no KMS
    assert secret.startswith(f"${{import:{measuring.config.name}-Operations:") and "OpenAIApiKey" in secret
    assert all(s["Effect"] == "Allow" and "*" not in "".join(_actions(s)) for s in statements)  # no wildcard action


def test_the_deliveries_table_keeps_hashed_ids_until_they_expire(measuring):
    """Lambda may deliver an event twice (teacher_deliveries.py): the ids handled, each with an expiry past
    Lambda's maximum event age and the function's run, encrypted, paid per request."""
    from taskrouter.adapters.teacher_deliveries import DELIVERIES_EXPIRE_AFTER_S

    template = measuring.templates["Capture"]
    _, table = _one(template, "AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"] == {"SSEEnabled": True}  # the AWS managed key
    teacher = template["Resources"][_teacher(template)]["Properties"]
    assert DELIVERIES_EXPIRE_AFTER_S >= capture_stack.TEACHER_MAX_EVENT_AGE.to_seconds() + teacher["Timeout"]
    assert table["DeletionPolicy"] == ("Retain" if measuring.config.retain_on_delete else "Delete")


def test_the_kill_switch_starts_on_and_takes_only_on_or_off(measuring):
    template = measuring.templates["Capture"]
    switch_id, switch = _one(template, "AWS::SSM::Parameter")
    props = switch["Properties"]
    assert (props["Name"], props["Value"], props["AllowedPattern"], props["Type"]) == (
        f"/taskrouter/{measuring.config.name}/capture", "on", "^(on|off)$", "String")
    assert template["Outputs"]["CaptureParameter"]["Value"] == {"Ref": switch_id}
    assert re.fullmatch(props["AllowedPattern"], "off") and not re.fullmatch(props["AllowedPattern"], "On")


def test_the_capture_stack_is_stateful_and_apart(measuring):
    """Its own stack, deployed after the secret's and before the router's; nothing stateless in it depends
    on Api or Monitoring."""
    assert measuring.dependencies["Capture"] == {"Operations"}
    assert "Capture" in measuring.dependencies["Api"] and "Capture" in measuring.dependencies["Monitoring"]


# Every resource of dev's Capture stack when it held the records and the teacher alone: its logical ids.
BEFORE_EVERY_STAGE_MEASURED = {
    "AccessLogs8B620ECA", "AccessLogsAutoDeleteObjectsCustomResourceA1409250", "AccessLogsPolicyABDC4D2D",
    "AnalystPolicy711E287A", "CaptureKey0B937016", "Captured45005CB0", "CapturedAutoDeleteObjectsCustomResource2F1AFD56",
    "CapturedPolicyD23B3C71", "Catalogue6D2BB205", "CustomS3AutoDeleteObjectsCustomResourceProviderHandler9D90184F",
    "CustomS3AutoDeleteObjectsCustomResourceProviderRole3B1BD092", "Queries", "RecordsTableC1978F9E", "Switch39BDFED0",
    "TeacherA3F6831D", "TeacherEventInvokeConfig5ECCDF9C", "TeacherLogs48EB46FC", "TeacherRole99028034",
    "TeacherRoleDefaultPolicyF346772A",
}  # fmt: skip


def test_a_stage_that_stored_records_keeps_every_logical_id(storing):
    """The records' bucket, key and catalogue sit at the stack's root as before: a new logical id would
    replace the bucket, and delete the records of a stage that does not retain them. Only the deliveries
    table is new."""
    resources = set(storing.templates["Capture"]["Resources"])
    assert resources - BEFORE_EVERY_STAGE_MEASURED == {next(k for k in resources if k.startswith("Deliveries"))}
    assert BEFORE_EVERY_STAGE_MEASURED <= resources


# --- the router's side -----------------------------------------------------------------------------


def _router(template: dict) -> tuple[str, dict]:
    return next((k, f["Properties"]) for k, f in _resources(template, "AWS::Lambda::Function").items()
                if f["Properties"]["Handler"] == "taskrouter.handlers.router.handler")


def test_the_router_samples_redacts_and_sends_to_the_teacher(measuring):
    """Where records are stored, the three draws; where none are, the uniform sample alone: what the two
    others draw would be kept by nothing."""
    config = measuring.config
    _, router = _router(measuring.templates["Api"])
    variables = router["Environment"]["Variables"]
    capture = {name: value for name, value in variables.items() if name.startswith(("TASKROUTER_CAPTURE_", "TASKROUTER_ADAPTER_"))}
    function, switch = capture.pop("TASKROUTER_CAPTURE_FUNCTION"), capture.pop("TASKROUTER_CAPTURE_PARAMETER")
    assert function["Fn::ImportValue"].startswith(f"{config.name}-Capture:ExportsOutputRefTeacher")
    assert switch["Fn::ImportValue"].startswith(f"{config.name}-Capture:ExportsOutputRefSwitch")
    stored = config.capture.stores_records
    assert capture == {
        "TASKROUTER_CAPTURE_SHARE": str(config.capture.share),
        "TASKROUTER_CAPTURE_FALLBACK_SHARE": str(config.capture.fallback_share) if stored else "0.0",
        "TASKROUTER_CAPTURE_UNSEEN_SHARE": str(config.capture.unseen_share) if stored else "0.0",
        "TASKROUTER_CAPTURE_REDACT": "email,phone",
        "TASKROUTER_CAPTURE_SEND_TIMEOUT_MS": "100",
        "TASKROUTER_ADAPTER_NAME": "base",  # the committed stages serve the base: no task list (test_adapters.py)
    }
    assert capture["TASKROUTER_CAPTURE_SHARE"] == {"dev": "0.2", "prod": "0.02"}[config.name]
    assert (capture["TASKROUTER_CAPTURE_FALLBACK_SHARE"], stored) in (("0.05", True), ("0.0", False))


def test_the_router_may_invoke_the_teacher_and_read_the_switch_only(measuring):
    template = measuring.templates["Api"]
    _, router = _router(template)
    statements = _role_statements(template, router["Role"]["Fn::GetAtt"][0])
    (invoke,) = [s for s in statements if "lambda:InvokeFunction" in _actions(s)]
    assert _actions(invoke) == ["lambda:InvokeFunction"]  # asynchronous Invoke of the one function
    assert _text(invoke["Resource"]).startswith(f"${{import:{measuring.config.name}-Capture:ExportsOutputFnGetAttTeacher")
    (reads,) = [s for s in statements if "ssm:GetParameter" in _actions(s)]
    resources = reads["Resource"] if isinstance(reads["Resource"], list) else [reads["Resource"]]
    rendered = sorted(_text(resource) for resource in resources)
    assert len(rendered) == 2  # the ops mode and the kill switch, by name
    assert any("OpsMode" in r for r in rendered) and any("-Capture:ExportsOutputRefSwitch" in r for r in rendered)


def test_the_routers_timeout_covers_a_captured_turns_send(measuring):
    config = measuring.config
    _, router = _router(measuring.templates["Api"])
    assert router["Timeout"] == config.router_timeout_s
    without = config.model_copy(update={"capture": config.capture.model_copy(update={"share": 0.0, "enabled": False})})
    assert config.router_timeout_s >= without.router_timeout_s


# --- alarms and the dashboard ----------------------------------------------------------------------


def _alarms(template: dict) -> dict[str, dict]:
    return {a["Properties"]["AlarmName"]: a["Properties"] for a in _resources(template, "AWS::CloudWatch::Alarm").values()}


def test_teacher_agreement_alarms_under_min_agreement_over_an_hour_with_enough_samples(measuring):
    config = measuring.config
    template = measuring.templates["Monitoring"]
    topic_id = next(iter(_resources(template, "AWS::SNS::Topic")))
    (alarm,) = [props for name, props in _alarms(template).items() if "TeacherAgreement" in name]
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    (returned,) = [query for query in queries.values() if query.get("ReturnData", True)]
    assert returned["Expression"] == f"IF(samples >= {config.capture.min_samples}, agreement, 1)"
    for query_id, statistic in (("agreement", "Average"), ("samples", "SampleCount")):
        stat = queries[query_id]["MetricStat"]
        assert (stat["Stat"], stat["Period"]) == (statistic, 3600)
        assert (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"]) == ("TaskRouter", "TeacherAgreement")
        dimensions = {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}
        assert dimensions == {"service": TEACHER_SERVICE, "adapter": "base", "strategy": config.default_strategy.value}
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (config.capture.min_agreement, "LessThanThreshold")
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["TreatMissingData"]) == (1, 1, "notBreaching")
    assert alarm["AlarmActions"] == [{"Ref": topic_id}] and alarm["OKActions"] == [{"Ref": topic_id}]
    assert "docs/runbook.md#teacher-agreement" in alarm["AlarmDescription"]


def test_capture_dropped_and_the_teachers_errors_alarm(measuring):
    alarms = _alarms(measuring.templates["Monitoring"])
    (dropped,) = [props for name, props in alarms.items() if "CaptureDropped" in name]
    assert (dropped["MetricName"], dropped["Statistic"], dropped["Period"]) == ("CaptureDropped", "Average", 300)
    assert dropped["Dimensions"] == [{"Name": "service", "Value": "taskrouter-router"}]
    assert (dropped["Threshold"], dropped["ComparisonOperator"]) == (CAPTURE_DROPPED_RATE_ALARM, "GreaterThanThreshold")
    assert (dropped["EvaluationPeriods"], dropped["DatapointsToAlarm"]) == (5, 3)
    assert "docs/runbook.md#capture-dropped" in dropped["AlarmDescription"]
    teacher = {name: props for name, props in alarms.items() if "-Teacher-" in name}
    (errors,) = teacher.values()  # errors only: its throttles are by design (concurrency 1, Lambda's async queue)
    (metric,) = [m["MetricStat"] for m in errors["Metrics"] if "MetricStat" in m]
    assert (metric["Metric"]["MetricName"], metric["Stat"]) == ("Errors", "Sum")
    assert "-Capture:ExportsOutputRefTeacher" in json.dumps(metric["Metric"]["Dimensions"])
    assert "docs/runbook.md#teacher-errors" in errors["AlarmDescription"]


def _lambda_alarm(template: dict, metric: str) -> list[dict]:
    return [props for props in _alarms(template).values() if props.get("MetricName") == metric]


@pytest.mark.parametrize(("metric", "section"), [("AsyncEventsDropped", "teacher-events-dropped"),
                                                  ("DestinationDeliveryFailures", "teacher-destination-failures")])
def test_a_dropped_or_undelivered_teacher_event_alarms_at_the_first(measuring, metric, section):
    """Lambda's own metrics of the teacher function: an event dropped (failed, never tried again, or past the
    maximum age: sent to the on-failure destination first where records are stored), and a destination
    Lambda could not deliver to (the event lost with its conversation): only where there is one."""
    template = measuring.templates["Monitoring"]
    topic_id = next(iter(_resources(template, "AWS::SNS::Topic")))
    if metric == "DestinationDeliveryFailures" and not measuring.config.capture.stores_records:
        assert _lambda_alarm(template, metric) == []  # no destination where nothing is stored
        return
    (alarm,) = _lambda_alarm(template, metric)
    assert (alarm["Namespace"], alarm["Statistic"], alarm["Period"]) == ("AWS/Lambda", "Sum", 300)
    (dimension,) = alarm["Dimensions"]
    assert dimension["Name"] == "FunctionName" and "-Capture:ExportsOutputRefTeacher" in json.dumps(dimension["Value"])
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["TreatMissingData"]) == (1, 1, "notBreaching")
    assert alarm["AlarmActions"] == [{"Ref": topic_id}]
    assert f"docs/runbook.md#{section}" in alarm["AlarmDescription"]
    assert section in _sections(RUNBOOK)


def _dashboard_widgets(stage) -> list[dict]:
    (dashboard,) = _resources(stage.templates["Monitoring"], "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    # the body is a Fn::Join of literal text and references: the references as placeholders make it JSON
    text = "".join(part if isinstance(part, str) else json.dumps(_text(part))[1:-1] for part in body["Fn::Join"][1])
    return json.loads(text)["widgets"]


def test_the_dashboard_shows_capture_the_teacher_and_unseen_tasks(measuring):
    (dashboard,) = _resources(measuring.templates["Monitoring"], "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for shown in ("TeacherAgreement", "TeacherAgreementKept", "TeacherAgreementByConfidence", "CaptureDropped",
                  "CaptureSendLatency", "TeacherFailed", "RecordDuplicate", "DeliveryUnchecked", "AsyncEventsDropped",
                  "AsyncEventAge", "UnseenTasks", "Unseen tasks (base)", "Throttles"):
        assert shown in body, shown


def test_the_live_reliability_curve_is_a_bar_per_confidence_band_for_each_strategy(measuring):
    """A graph per strategy of the teacher's agreement by band of the primary's confidence, over the
    dashboard's time range, and one of the samples behind each bar."""
    from taskrouter.adapters.teacher_metrics import CONFIDENCE_BANDS

    widgets = [w for w in _dashboard_widgets(measuring) if w.get("properties", {}).get("title", "").startswith("Live reliability")]
    assert len(widgets) == 2 * len(measuring.config.budgets)
    for widget in widgets:
        props = widget["properties"]
        assert props["view"] == "bar" and props["setPeriodToTimeRange"] is True
        statistic = "Average" if "agreement" in props["title"] else "SampleCount"
        rows = props["metrics"]
        assert [row[-1]["label"] for row in rows] == list(CONFIDENCE_BANDS)
        for row in rows:
            assert row[:2] == ["TaskRouter", "TeacherAgreementByConfidence"]
            assert row[-1].get("stat", "Average") == statistic  # the dashboard's default statistic is left out
            dimensions = dict(zip(row[2:-1:2], row[3:-1:2]))
            assert dimensions["service"] == TEACHER_SERVICE and dimensions["adapter"] == "base"
            assert dimensions["strategy"] in props["title"] and dimensions["band"] == row[-1]["label"]
    titles = sorted(w["properties"]["title"] for w in widgets)
    assert titles == sorted(f"Live reliability, {s.value}: {what}" for s in measuring.config.budgets
                            for what in ("teacher agreement by confidence band", "samples by confidence band"))


def test_the_agreement_metrics_the_teacher_may_publish_are_counted_in_the_doc(measuring):
    """Custom metrics are billed once published: the dashboard names every agreement metric of the serving
    adapter, and docs/capture.md states how many there can be."""
    from taskrouter.adapters.teacher_metrics import CONFIDENCE_BANDS

    body = json.dumps(_dashboard_widgets(measuring))
    rows = {json.dumps(row) for widget in _dashboard_widgets(measuring) for row in widget.get("properties", {}).get("metrics", [])
            if isinstance(row, list) and len(row) > 1 and str(row[1]).startswith("TeacherAgreement") and "expression" not in json.dumps(row)}
    series = {tuple(x for x in json.loads(row)[:-1]) for row in rows}
    per_adapter = len(measuring.config.budgets) * (2 + len(CONFIDENCE_BANDS))
    assert len(series) == per_adapter == 36 and "TeacherAgreementKept" in body
    doc = " ".join((ROOT / "docs" / "capture.md").read_text().split())
    assert f"{per_adapter} metrics" in doc


def test_the_alarm_handlings_warnings_alarm_at_the_first(stage):
    for metric, section in (("NotificationsSkipped", "notifications-skipped"), ("ParameterMalformed", "parameter-malformed")):
        (alarm,) = [props for name, props in _alarms(stage.templates["Monitoring"]).items() if metric in name]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"], alarm["Period"]) == ("TaskRouter", metric, "Sum", 300)
        assert alarm["Dimensions"] == [{"Name": "service", "Value": ALARM_HANDLER_SERVICE}]
        assert ALARM_HANDLER_SERVICE == "taskrouter-alarm-handling"  # handlers/alarms.py's default service
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
        assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["TreatMissingData"]) == (1, 1, "notBreaching")
        assert f"docs/runbook.md#{section}" in alarm["AlarmDescription"]


def test_the_runbook_says_what_disagreement_means_and_points_at_the_flywheel():
    sections = _sections(RUNBOOK)
    assert {"teacher-agreement", "capture-dropped", "teacher-errors", "notifications-skipped",
            "parameter-malformed"} <= sections
    runbook = RUNBOOK.read_text()
    section = " ".join(runbook.split("## Teacher agreement\n", 1)[1].split("\n## ", 1)[0].split())
    for said in ("no longer fits the registry or the traffic", "docs/capture.md", "harvest", "review", "compare",
                 "promote", "README.md#the-data-flywheel-harvest-review-train-compare-promote"):
        assert said in section, said
    readme = (ROOT / "README.md").read_text()
    assert "### The data flywheel: harvest, review, train, compare, promote" in readme


# --- a stage that stores no records ----------------------------------------------------------------


def test_a_stage_that_stores_no_records_keeps_no_bucket_table_or_workgroup(not_storing):
    """It measures (the teacher, its alarms: above) and keeps nothing: no bucket, key, table, workgroup or
    analysts' policy; nothing for harvest to find."""
    template = not_storing.templates["Capture"]
    for kind in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::Glue::Database", "AWS::Glue::Table", "AWS::Athena::WorkGroup",
                 "AWS::IAM::ManagedPolicy"):
        assert not _resources(template, kind), kind
    assert "CaptureBucketName" not in template["Outputs"] and "TeacherFunctionName" in template["Outputs"]
    names = " ".join(_alarms(not_storing.templates["Monitoring"]))
    assert "TeacherAgreement" in names and "-Teacher-" in names  # measured all the same


def test_share_zero_measures_nothing_no_teacher_nothing_sent(tmp_path):
    """share = 0 (with enabled = false) is how a stage stops measuring at a deploy: no Capture stack, the
    router's capture off (no function named), no teacher alarm."""
    from infra.app import build_app
    from infra.stage import TaskRouterStage

    start = VALID.index("[prod.capture]")
    section = VALID[start:VALID.index("[prod.budgets.zero_shot]")]
    config = load_stages(_stages_with(tmp_path, section, section.replace("\nshare = 0.02", "\nshare = 0")))["prod"]
    assert not config.capture.measures
    app = build_app({"prod": config}, outdir=str(tmp_path / "cdk.out"))
    (stage,) = [child for child in app.node.children if isinstance(child, TaskRouterStage)]
    assert stage.capture is None
    app.synth()
    assembly = stage.synth()
    templates = {stack.stack_name: stack.template for stack in assembly.stacks}
    assert "prod-Capture" not in templates
    _, router = _router(templates["prod-Api"])
    assert not [name for name in router["Environment"]["Variables"] if name.startswith("TASKROUTER_CAPTURE_")]
    assert "TeacherAgreement" not in " ".join(_alarms(templates["prod-Monitoring"]))
