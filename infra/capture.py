"""Quality in production (docs/capture.md): the stage's capture bucket, its Glue table and Athena
workgroup, the teacher function the router sends sampled turns to, and the kill switch.

Stateful like the registry: the records outlive any stateless stack. Created only where the stage's
`capture.enabled` (infra/stage.py); the kill switch stops capture with no deploy."""

from __future__ import annotations

import math

from aws_cdk import (
    CfnOutput,
    Duration,
    Stack,
    aws_athena as athena,
    aws_glue as glue,
    aws_iam as iam,
    aws_kms as kms,
    aws_s3 as s3,
    aws_secretsmanager as secretsmanager,
    aws_ssm as ssm,
)
from constructs import Construct

from infra.config import StageConfig
from infra.functions import bundled_function
from infra.nag import acknowledge

TEACHER_SERVICE = "taskrouter-teacher"  # Powertools' service: the `service` of TeacherAgreement
RECORDS_PREFIX = "records/"  # records/date=YYYY-MM-DD/hour=HH/<id>.json (docs/capture.md)
ATHENA_RESULTS_PREFIX = "athena-results/"
# What the teacher's function needs besides its OpenAI call: start, read the key's secret, write a record.
TEACHER_MARGIN_S = 10
# A sample Lambda could not hand to the teacher within this is dropped (Lambda's default is 6 hours):
# its turn is stale for an hourly agreement, and a retry would pay the teacher twice.
TEACHER_MAX_EVENT_AGE = Duration.hours(1)
KILL_SWITCH_VALUES = ("on", "off")

_STRING, _INT, _DOUBLE, _BOOL = glue.Schema.STRING, glue.Schema.INTEGER, glue.Schema.DOUBLE, glue.Schema.BOOLEAN


def _struct(**fields: glue.Type) -> glue.Type:
    return glue.Schema.struct([glue.Column(name=name, type=kind) for name, kind in fields.items()])


# The record's fields as docs/capture.md has them, in its order; the JSON SerDe maps keys to columns by name.
RECORD_COLUMNS: dict[str, glue.Type] = {
    "schema": _INT,
    "id": _STRING,
    "time": _STRING,  # ISO 8601 with milliseconds and Z, which Hive's timestamp does not parse
    "conversation": glue.Schema.array(_struct(role=_STRING, content=_STRING)),
    "current_task": _STRING,
    "tasks": glue.Schema.array(_struct(name=_STRING, description=_STRING, examples=glue.Schema.array(_STRING))),
    "registry_sha256": _STRING,
    "strategy": _STRING,
    "adapter": _STRING,
    "unseen_tasks": glue.Schema.array(_STRING),
    "decision": _struct(task=_STRING, event=_STRING, backend=_STRING, fallback_reason=_STRING),
    "primary": _struct(answer=_STRING, probability=_DOUBLE, latency_ms=_DOUBLE),
    "latency_ms": _DOUBLE,
    "sampling": _struct(probability=_DOUBLE, uniform=_BOOL, reason=_STRING),
    "redaction": glue.Schema.array(_STRING),
    "teacher": _struct(model=_STRING, strategy=_STRING, answer=_STRING, agrees=_BOOL, latency_ms=_DOUBLE,
                       error=_STRING),
}
# The key's `date=` folder as the partition `day`: `date` is a reserved word in Athena's SQL (its
# partition projection guide names the column `day` for that reason); the location template maps it.
DAY_PARTITION, HOUR_PARTITION = "day", "hour"


def teacher_timeout_s(stage: StageConfig) -> int:
    return math.ceil(stage.capture.teacher_timeout_ms / 1000) + TEACHER_MARGIN_S


class CaptureStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        openai_secret: secretsmanager.ISecret,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        capture = stage.capture
        common = dict(
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=stage.removal_policy,
            auto_delete_objects=not stage.retain_on_delete,  # dev's `cdk destroy` empties them
        )
        # The capture bucket's own, as the artifact bucket's: a policy on another stack's log bucket
        # naming this bucket would make the two stacks depend on each other.
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(stage.log_retention_days))],
            encryption=s3.BucketEncryption.S3_MANAGED,  # S3 delivers access logs only to SSE-S3 buckets
            **common,
        )
        self.key = kms.Key(
            self,
            "CaptureKey",
            description=f"TaskRouter {stage.name}: captured turns and their Athena results",
            enable_key_rotation=True,
            removal_policy=stage.removal_policy,
        )
        retention = Duration.days(capture.retention_days)
        self.bucket = s3.Bucket(
            self,
            "Captured",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,  # one data key per batch of objects, not a KMS call per record
            # Not versioned: a record is written once under its own id and never changed, and a version
            # would keep conversations past retention_days as noncurrent objects.
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(id="records", prefix=RECORDS_PREFIX, expiration=retention),
                s3.LifecycleRule(id="athena-results", prefix=ATHENA_RESULTS_PREFIX, expiration=retention),
                s3.LifecycleRule(id="uploads", abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="captured/",
            **common,
        )
        self._catalogue(stage)
        self.teacher = self._teacher(stage, openai_secret)
        # The kill switch: "off" stops the router's sampling within its cache's minute, no deploy.
        self.switch = ssm.StringParameter(
            self,
            "Switch",
            parameter_name=f"/taskrouter/{stage.name}/capture",
            description="TaskRouter capture kill switch: on or off (read by the router at least every 60 s)",
            string_value=KILL_SWITCH_VALUES[0],
            allowed_pattern=f"^({'|'.join(KILL_SWITCH_VALUES)})$",
        )
        # `taskrouter data harvest --stage` finds the bucket by this output of `<stage>-Capture`.
        CfnOutput(self, "CaptureBucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "CaptureKeyArn", value=self.key.key_arn)
        CfnOutput(self, "CaptureParameter", value=self.switch.parameter_name)
        CfnOutput(self, "TeacherFunctionName", value=self.teacher.function_name)

    def _catalogue(self, stage: StageConfig) -> None:
        """A Glue table over records/ for Athena: JSON lines, partitions projected from the key layout
        (no crawler, no MSCK REPAIR), over the retention window only; results in the same bucket
        under the same key and expiry, the workgroup's settings enforced over a client's."""
        self.database = glue.Database(
            self,
            "Catalogue",
            database_name=f"taskrouter_{stage.name}_capture",
            description=f"TaskRouter {stage.name}: captured turns (docs/capture.md)",
            removal_policy=stage.removal_policy,
        )
        self.table = glue.S3Table(
            self,
            "Records",
            database=self.database,
            table_name="records",
            description="One row per captured turn: the router's record and the teacher's answer (docs/capture.md)",
            columns=[glue.Column(name=name, type=kind) for name, kind in RECORD_COLUMNS.items()],
            partition_keys=[
                glue.Column(name=DAY_PARTITION, type=_STRING),
                glue.Column(name=HOUR_PARTITION, type=_INT),
            ],
            data_format=glue.DataFormat.JSON,  # org.openx.data.jsonserde.JsonSerDe
            storage=glue.S3TableStorage.from_bucket(self.bucket),
            s3_prefix=RECORDS_PREFIX,
            # SSE-KMS is read transparently by Athena; the flag marks client-side encrypted data.
            has_encrypted_data=False,
            partition_projection={
                DAY_PARTITION: glue.PartitionProjectionConfiguration.date(
                    min=f"NOW-{stage.capture.retention_days}DAYS", max="NOW", format="yyyy-MM-dd",
                ),
                HOUR_PARTITION: glue.PartitionProjectionConfiguration.integer(min=0, max=23, digits=2),
            },
            parameters={
                "storage.location.template": self.bucket.s3_url_for_object(
                    f"{RECORDS_PREFIX}date=${{{DAY_PARTITION}}}/hour=${{{HOUR_PARTITION}}}/"
                ),
            },
        )
        self.workgroup = athena.CfnWorkGroup(
            self,
            "Queries",
            name=f"taskrouter-{stage.name}-capture",
            description=f"TaskRouter {stage.name}: queries over captured turns",
            recursive_delete_option=not stage.retain_on_delete,  # dev's destroy takes its saved queries too
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=self.bucket.s3_url_for_object(ATHENA_RESULTS_PREFIX),
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=self.key.key_arn,
                    ),
                    expected_bucket_owner=self.account,
                ),
            ),
        )
        self.workgroup.apply_removal_policy(stage.removal_policy)
        CfnOutput(self, "GlueDatabase", value=self.database.database_name)
        CfnOutput(self, "AthenaWorkgroup", value=self.workgroup.ref)

    def _teacher(self, stage: StageConfig, openai_secret: secretsmanager.ISecret):
        """The router invokes it asynchronously with a redacted turn; it asks the teacher, publishes
        TeacherAgreement and writes the record. One at a time (reserved concurrency 1): the teacher's
        cost and OpenAI share are bounded whatever the traffic; what waits longer than an hour in
        Lambda's queue is dropped. One retry: the handler raises only when the record could not be written
        (a teacher failure is stored as such), so a retry re-pays one teacher call to save the record."""
        capture = stage.capture
        function, role = bundled_function(
            self,
            stage,
            "Teacher",
            description="TaskRouter: the shadow teacher (a captured turn answered again, its record stored)",
            handler="taskrouter.handlers.teacher.handler",
            memory_size=512,
            timeout=Duration.seconds(teacher_timeout_s(stage)),
            reserved_concurrent_executions=1,
            traced=False,  # X-Ray's actions take no resource: this role names every one it may touch
            environment={
                "POWERTOOLS_SERVICE_NAME": TEACHER_SERVICE,
                "TASKROUTER_CAPTURE_BUCKET": self.bucket.bucket_name,
                "TASKROUTER_TEACHER_MODEL": capture.teacher_model,
                "TASKROUTER_TEACHER_STRATEGY": capture.teacher_strategy.value,
                "TASKROUTER_TEACHER_TIMEOUT_MS": str(capture.teacher_timeout_ms),
                "TASKROUTER_TEACHER_REQUESTS_PER_MINUTE": str(capture.teacher_requests_per_minute),
                "TASKROUTER_TEACHER_TOKENS_PER_MINUTE": str(capture.teacher_tokens_per_minute),
                "TASKROUTER_OPENAI_SECRET_ARN": openai_secret.secret_arn,
                "TASKROUTER_OPENAI_MODEL": stage.openai_model,
            },
        )
        function.configure_async_invoke(retry_attempts=1, max_event_age=TEACHER_MAX_EVENT_AGE)
        # Writes records, reads nothing back; the key only to encrypt them (SSE-KMS asks for a data key).
        records = self.bucket.arn_for_objects(RECORDS_PREFIX + "*")
        role.add_to_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=[records]))
        role.add_to_policy(iam.PolicyStatement(actions=["kms:GenerateDataKey"], resources=[self.key.key_arn]))
        role.add_to_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[openai_secret.secret_arn])
        )
        bucket_arn = f"<{self.get_logical_id(self.bucket.node.default_child)}.Arn>"
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{bucket_arn}/{RECORDS_PREFIX}*]",
                    "the teacher writes one new object per captured turn under records/, named by the record's "
                    "id and its hour: PutObject only, no other prefix, no read")
        return function
