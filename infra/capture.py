"""Quality in production (docs/capture.md): on every stage that measures (`capture.share` over 0), the
teacher function the router sends sampled turns to, the table that keeps it from labelling a turn twice,
and the kill switch; where the stage stores records (`capture.enabled`), the capture bucket, its Glue
table and Athena workgroup with the analysts' policy to query them.

Stateful like the registry: the records outlive any stateless stack. One stack holds both parts, the
records' only where they are stored, at the stack's root as before the teacher came to every stage:
their logical ids, and a stage's stored records, stay; turning storage on or off leaves the teacher the
router and the alarms name where it is (a teacher moved to a stack of its own would delete the exports
the router's stack imports, which CloudFormation refuses while they are in use)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jsii
from aws_cdk import (
    CfnOutput,
    Duration,
    Stack,
    aws_athena as athena,
    aws_dynamodb as dynamodb,
    aws_glue as glue,
    aws_iam as iam,
    aws_kms as kms,
    aws_lambda as lambda_,
    aws_s3 as s3,
    aws_secretsmanager as secretsmanager,
    aws_ssm as ssm,
)
from constructs import Construct

from infra.config import StageConfig
from infra.functions import bundled_function
from infra.nag import acknowledge
from taskrouter.adapters.teacher_deliveries import DELIVERY_EXPIRY_ATTRIBUTE, DELIVERY_KEY_ATTRIBUTE

TEACHER_SERVICE = "taskrouter-teacher"  # Powertools' service: the `service` of TeacherAgreement
RECORDS_PREFIX = "records/"  # records/date=YYYY-MM-DD/hour=HH/<id>.json (docs/capture.md)
ATHENA_RESULTS_PREFIX = "athena-results/"
# Where Lambda writes the invocation record of a teacher event that failed, as an on-failure destination:
# aws/lambda/async/<function-name>/YYYY/MM/DD/<time>-<uuid> (aws-cdk-lib's aws-lambda-destinations README,
# "S3Destination"); not settable, so the expiry follows it.
FAILED_EVENTS_PREFIX = "aws/lambda/async/"
# What the teacher's function needs besides its OpenAI call: start, read the key's secret, write a record.
TEACHER_MARGIN_S = 10
# A sample Lambda could not hand to the teacher within this is dropped (Lambda's default is 6 hours):
# its turn is stale for an hourly agreement.
TEACHER_MAX_EVENT_AGE = Duration.hours(1)
# A failed invocation is not tried again: it would ask (and pay) the teacher again. Its handler raises only
# when the record could not be written (handlers/teacher.py); the event then goes to the on-failure
# destination where the stage stores records, and is counted as dropped (AsyncEventsDropped) everywhere.
TEACHER_RETRY_ATTEMPTS = 0
KILL_SWITCH_VALUES = ("on", "off")

_STRING, _INT, _DOUBLE, _BOOL = glue.Schema.STRING, glue.Schema.INTEGER, glue.Schema.DOUBLE, glue.Schema.BOOLEAN


def _struct(**fields: glue.Type) -> glue.Type:
    return glue.Schema.struct([glue.Column(name=name, type=kind) for name, kind in fields.items()])


_TASK = _struct(name=_STRING, description=_STRING, examples=glue.Schema.array(_STRING))
# The record's fields as docs/capture.md has them, in its order; the JSON SerDe maps keys to columns by name
# (a schema-1 record lacks the two of schema 2: they read as null).
RECORD_COLUMNS: dict[str, glue.Type] = {
    "schema": _INT,
    "id": _STRING,
    "time": _STRING,  # ISO 8601 with milliseconds and Z, which Hive's timestamp does not parse
    "conversation": glue.Schema.array(_struct(role=_STRING, content=_STRING)),
    "current_task": _STRING,
    "tasks": glue.Schema.array(_TASK),
    "requested_tasks": glue.Schema.array(_STRING),
    "running_task": _TASK,
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


def teacher_deliveries(scope: Stack, stage: StageConfig) -> dynamodb.Table:
    """The teacher's deliveries (adapters/teacher_deliveries.py): one item per record id, written with an
    expiry, so that an event Lambda delivers twice is labelled and counted once. It holds the id's hash
    and the invocation's status, never content: AWS-managed encryption, no recovery to keep; DynamoDB's
    TTL deletes an expired item (a later delivery already reads it as expired)."""
    table = dynamodb.Table(
        scope,
        "Deliveries",
        partition_key=dynamodb.Attribute(name=DELIVERY_KEY_ATTRIBUTE, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        time_to_live_attribute=DELIVERY_EXPIRY_ATTRIBUTE,
        removal_policy=stage.removal_policy,
    )
    acknowledge(table, "AwsSolutions-DDB3", "its items are hashed record ids that expire within hours: a restore "
                "point would bring back nothing worth having")  # fmt: skip
    return table


@dataclass(frozen=True)
class StoredRecords:
    """Where a stage stores its records: the capture bucket and its key."""

    bucket: s3.IBucket
    key: kms.IKey


@jsii.implements(lambda_.IDestination)
class _FailedEventsBucket:
    """The capture bucket as the teacher's on-failure destination, granting nothing: aws-cdk-lib's
    `S3Destination` grants the function read of the whole bucket (`grantRead`), every record included;
    the grants the delivery needs are `shadow_teacher`'s."""

    def __init__(self, bucket: s3.IBucket) -> None:
        self._bucket = bucket

    def bind(self, _scope: Construct, _fn: lambda_.IFunction, *, type: lambda_.DestinationType) -> lambda_.DestinationConfig:
        return lambda_.DestinationConfig(destination=self._bucket.bucket_arn)


def shadow_teacher(
    scope: Stack,
    stage: StageConfig,
    openai_secret: secretsmanager.ISecret,
    records: StoredRecords | None,
    deliveries: dynamodb.ITable,
) -> lambda_.Function:
    """The teacher function (handlers/teacher.py). The router invokes it asynchronously with a redacted
    turn; it asks the teacher, publishes TeacherAgreement and, where the stage stores records, writes the
    record. One at a time (reserved concurrency 1): the teacher's cost and OpenAI share are bounded
    whatever the traffic; what waits longer than an hour in Lambda's queue is dropped; nothing is tried
    again (`TEACHER_RETRY_ATTEMPTS`); a record id already handled is skipped (`deliveries`).

    A failed event's invocation record holds the request, the redacted conversation: where the stage
    stores records it goes to the capture bucket (on-failure destination: KMS, TLS only, expiry), where
    it stores none it goes nowhere, counted by AsyncEventsDropped only (infra/monitoring.py alarms both
    that and DestinationDeliveryFailures)."""
    capture = stage.capture
    environment = {
        "POWERTOOLS_SERVICE_NAME": TEACHER_SERVICE,
        "TASKROUTER_TEACHER_MODEL": capture.teacher_model,
        "TASKROUTER_TEACHER_STRATEGY": capture.teacher_strategy.value,
        "TASKROUTER_TEACHER_TIMEOUT_MS": str(capture.teacher_timeout_ms),
        "TASKROUTER_TEACHER_REQUESTS_PER_MINUTE": str(capture.teacher_requests_per_minute),
        "TASKROUTER_TEACHER_TOKENS_PER_MINUTE": str(capture.teacher_tokens_per_minute),
        "TASKROUTER_OPENAI_SECRET_ARN": openai_secret.secret_arn,
        "TASKROUTER_OPENAI_MODEL": stage.openai_model,
        "TASKROUTER_TEACHER_DELIVERIES_TABLE": deliveries.table_name,
    }
    if records is not None:
        environment["TASKROUTER_CAPTURE_BUCKET"] = records.bucket.bucket_name
    function, role = bundled_function(
        scope,
        stage,
        "Teacher",
        description="TaskRouter: the shadow teacher (a sampled turn answered again; its record stored where the stage stores them)",
        handler="taskrouter.handlers.teacher.handler",
        memory_size=512,
        timeout=Duration.seconds(teacher_timeout_s(stage)),
        reserved_concurrent_executions=1,
        traced=False,  # X-Ray's actions take no resource: this role names every one it may touch
        environment=environment,
    )
    function.configure_async_invoke(
        retry_attempts=TEACHER_RETRY_ATTEMPTS,
        max_event_age=TEACHER_MAX_EVENT_AGE,
        on_failure=None if records is None else _FailedEventsBucket(records.bucket),
    )
    role.add_to_policy(
        iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[openai_secret.secret_arn])
    )
    # Powertools' idempotency on DynamoDB: PutItem (in progress, on a condition), GetItem (what a duplicate
    # finds), UpdateItem (completed), DeleteItem (an invocation that failed may be delivered again).
    role.add_to_policy(iam.PolicyStatement(
        actions=["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
        resources=[deliveries.table_arn],
    ))  # fmt: skip
    if records is not None:
        _grant_record_writes(scope, role, records)
    return function


def _grant_record_writes(scope: Stack, role: iam.Role, records: StoredRecords) -> None:
    """Writes records, and Lambda's delivery of a failed event with the function's role; reads nothing back.
    The delivery needs s3:PutObject and s3:ListBucket on the bucket, and kms:GenerateDataKey on its key
    (the Lambda Developer Guide, "Capturing records of Lambda asynchronous invocations" and, for the same
    S3 destinations of event source mappings, "Capturing discarded batches ...": the execution role's
    permissions for an S3 destination and its KMS key)."""
    bucket = records.bucket
    role.add_to_policy(iam.PolicyStatement(
        actions=["s3:PutObject"],
        resources=[bucket.arn_for_objects(RECORDS_PREFIX + "*"), bucket.arn_for_objects(FAILED_EVENTS_PREFIX + "*")],
    ))  # fmt: skip
    role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
    # SSE-KMS asks for a data key on a write; no decrypt.
    role.add_to_policy(iam.PolicyStatement(actions=["kms:GenerateDataKey"], resources=[records.key.key_arn]))
    bucket_arn = f"<{scope.get_logical_id(bucket.node.default_child)}.Arn>"
    for prefix, why in ((RECORDS_PREFIX, "one new object per captured turn under records/, named by the record's id and its hour"),
                        (FAILED_EVENTS_PREFIX, "Lambda's delivery of a failed event, under the prefix Lambda names")):  # fmt: skip
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{bucket_arn}/{prefix}*]",
                    f"the teacher writes {why}: PutObject only, no other prefix, no read")


class CaptureStack(Stack):
    """The teacher, its deliveries table and the kill switch on every stage that measures; the records'
    bucket, key, catalogue and analysts' policy where the stage stores them (`records` is None elsewhere)."""

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
        self.records = self._records(stage) if stage.capture.stores_records else None
        self.deliveries = teacher_deliveries(self, stage)
        self.teacher = shadow_teacher(self, stage, openai_secret, self.records, self.deliveries)
        # The kill switch: "off" stops the router's sampling within its cache's minute, no deploy.
        self.switch = ssm.StringParameter(
            self,
            "Switch",
            parameter_name=f"/taskrouter/{stage.name}/capture",
            description="TaskRouter capture kill switch: on or off (read by the router at least every 60 s)",
            string_value=KILL_SWITCH_VALUES[0],
            allowed_pattern=f"^({'|'.join(KILL_SWITCH_VALUES)})$",
        )
        CfnOutput(self, "CaptureParameter", value=self.switch.parameter_name)
        CfnOutput(self, "TeacherFunctionName", value=self.teacher.function_name)

    def _records(self, stage: StageConfig) -> StoredRecords:
        """Where the records are stored, and what queries them (at the stack's root: see the module's doc)."""
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
                s3.LifecycleRule(id="failed-events", prefix=FAILED_EVENTS_PREFIX, expiration=retention),
                s3.LifecycleRule(id="uploads", abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="captured/",
            **common,
        )
        self._catalogue(stage)
        self.analysts = self._analyst_policy(stage)
        # `taskrouter data harvest --stage` finds the bucket by this output of `<stage>-Capture`.
        CfnOutput(self, "CaptureBucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "CaptureKeyArn", value=self.key.key_arn)
        return StoredRecords(self.bucket, self.key)

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

    def _analyst_policy(self, stage: StageConfig) -> iam.ManagedPolicy:
        """What an analyst needs to query the records with Athena and nothing more: attach it to their role
        or group. Each grant follows AWS's documentation of an Athena query over SSE-KMS data (checked
        statement by statement in tests/infra/test_analyst_access.py):
        - the workgroup's query actions (Athena User Guide, "Example workgroup policies": running queries
          in a specified workgroup), the catalogue's browsing on AwsDataCatalog, the workgroup list;
        - Glue reads of the database and the table with their catalogue (Athena User Guide, "Configure
          access to databases and tables in the AWS Glue Data Catalog");
        - S3: list and read under records/, read and write the results under athena-results/ (the
          workgroup enforces that location), the results' multipart uploads (Athena User Guide, "Control
          access to Amazon S3 from Athena"; AmazonAthenaFullAccess's grants on a results bucket);
        - KMS: kms:Decrypt to read the records and results, kms:GenerateDataKey to write results (Athena
          User Guide, "Permissions to encrypted data in Amazon S3"), through S3 only; the key's policy
          lets the account's IAM policies grant them (the KMS Developer Guide's default key policy)."""
        bucket, workgroup = self.bucket, self.workgroup.ref
        catalog = self.format_arn(service="glue", resource="catalog")
        database = self.format_arn(service="glue", resource="database", resource_name=self.database.database_name)
        table = self.format_arn(
            service="glue", resource="table", resource_name=f"{self.database.database_name}/{self.table.table_name}"
        )
        policy = iam.ManagedPolicy(
            self,
            "AnalystPolicy",
            description=f"TaskRouter {stage.name}: query the captured turns with Athena (workgroup {workgroup})",
            statements=[
                iam.PolicyStatement(
                    sid="QueryInTheWorkgroup",
                    actions=["athena:GetWorkGroup", "athena:StartQueryExecution", "athena:StopQueryExecution",
                             "athena:GetQueryExecution", "athena:BatchGetQueryExecution", "athena:ListQueryExecutions",
                             "athena:GetQueryResults", "athena:GetQueryResultsStream"],
                    resources=[self.format_arn(service="athena", resource="workgroup", resource_name=workgroup)],
                ),
                iam.PolicyStatement(
                    sid="BrowseTheCatalogue",
                    actions=["athena:GetDataCatalog", "athena:ListDatabases", "athena:GetDatabase",
                             "athena:ListTableMetadata", "athena:GetTableMetadata"],
                    resources=[self.format_arn(service="athena", resource="datacatalog", resource_name="AwsDataCatalog")],
                ),
                iam.PolicyStatement(sid="ListWorkgroups", actions=["athena:ListWorkGroups"], resources=["*"]),
                iam.PolicyStatement(
                    sid="ReadTheTable",
                    actions=["glue:GetDatabase", "glue:GetDatabases", "glue:GetTable", "glue:GetTables",
                             "glue:GetPartitions"],
                    resources=[catalog, database, table],
                ),
                iam.PolicyStatement(
                    sid="ListRecordsAndResults",
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [RECORDS_PREFIX + "*", ATHENA_RESULTS_PREFIX + "*"]}},
                ),
                iam.PolicyStatement(
                    sid="LocateAndListUploads",
                    actions=["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
                    resources=[bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="ReadRecordsAndResults",
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects(RECORDS_PREFIX + "*"), bucket.arn_for_objects(ATHENA_RESULTS_PREFIX + "*")],
                ),
                iam.PolicyStatement(
                    sid="WriteResults",
                    actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                    resources=[bucket.arn_for_objects(ATHENA_RESULTS_PREFIX + "*")],
                ),
                iam.PolicyStatement(
                    sid="UseTheKeyThroughS3",
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=[self.key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}},
                ),
            ],
        )
        bucket_arn = f"<{self.get_logical_id(bucket.node.default_child)}.Arn>"
        for finding, reason in (
            ("Resource::*", "athena:ListWorkGroups has no resource-level form; it lists workgroups' names only"),
            (f"Resource::{bucket_arn}/{RECORDS_PREFIX}*", "a query reads every record object under the table's location, records/"),
            (f"Resource::{bucket_arn}/{ATHENA_RESULTS_PREFIX}*",
             "Athena writes and reads a query's results under the workgroup's enforced results location"),
        ):
            acknowledge(policy, f"AwsSolutions-IAM5[{finding}]", reason)
        # An analyst's session attaches it by this ARN (docs/capture.md, "Querying the records").
        CfnOutput(self, "AnalystPolicyArn", value=policy.managed_policy_arn)
        return policy
