"""Builds the teacher function's parts from the environment once per execution environment, at start-up:
the teacher (the fallback's adapter on the teacher's model), its caps, the record store (if any), and
the deliveries already handled (if any)."""

from __future__ import annotations

import functools

import botocore.session
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from botocore.config import Config

from taskrouter.adapters.deadline_botocore import DeadlineBoundClient
from taskrouter.adapters.openai_backend import OpenAIBackend
from taskrouter.adapters.rate_limit import PerMinuteCaps
from taskrouter.adapters.record_store import DirectoryRecordStore, RecordStore, S3RecordStore
from taskrouter.composition.router_runtime import api_key_reader
from taskrouter.adapters.shadow_teacher import ShadowTeacher
from taskrouter.adapters.teacher_deliveries import BoundedDynamoDB, Deliveries
from taskrouter.adapters.teacher_settings import TeacherSettings


@functools.cache
def settings() -> TeacherSettings:
    return TeacherSettings.from_env()


@functools.cache
def shadow_teacher() -> ShadowTeacher:
    current = settings()
    backend = None
    if current.openai_configured:
        session = botocore.session.get_session()
        api_key = api_key_reader(session, current.openai_secret_arn)
        backend = OpenAIBackend(current.model, api_key, current.response_format)
        backend.warm()
    caps = PerMinuteCaps(current.requests_per_minute, current.tokens_per_minute)
    return ShadowTeacher(backend, current.model, current.strategy, current.timeout_s, caps)


@functools.cache
def record_store() -> RecordStore | None:
    """None where the stage stores no records."""
    current = settings()
    if current.bucket is not None:
        # One try per botocore call: the tries, and every one's time, are the deadline's (deadline_botocore.py).
        s3 = botocore.session.get_session().create_client("s3", config=Config(retries={"total_max_attempts": 1}))
        return S3RecordStore(DeadlineBoundClient(s3), current.bucket, current.kms_key)
    if current.capture_dir is not None:
        return DirectoryRecordStore(current.capture_dir)
    return None


@functools.cache
def deliveries() -> Deliveries | None:
    """None where no table is named (make local: its queue delivers each event once)."""
    table = settings().deliveries_table
    if table is None:
        return None
    # One try per botocore call, as the store's: the tries are BoundedDynamoDB's, within its deadline.
    client = BoundedDynamoDB(
        botocore.session.get_session().create_client("dynamodb", config=Config(retries={"total_max_attempts": 1}))
    )
    return Deliveries(DynamoDBPersistenceLayer(table_name=table, boto3_client=client), client)


def reset() -> None:
    """Forget what was built (tests: another environment)."""
    for built in (settings, shadow_teacher, record_store, deliveries):
        built.cache_clear()
