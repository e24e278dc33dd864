"""Builds the teacher function's parts from the environment once per execution environment, at start-up:
the teacher (the fallback's adapter on the teacher's model), its caps, and the record store."""

from __future__ import annotations

import functools

import botocore.session
from botocore.config import Config

from taskrouter.adapters.openai_backend import OpenAIBackend
from taskrouter.adapters.rate_limit import PerMinuteCaps
from taskrouter.adapters.record_store import DirectoryRecordStore, RecordStore, S3RecordStore
from taskrouter.adapters.runtime import api_key_reader
from taskrouter.adapters.shadow_teacher import ShadowTeacher
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
def record_store() -> RecordStore:
    current = settings()
    if current.bucket is None:
        assert current.capture_dir is not None  # the settings require one or the other
        return DirectoryRecordStore(current.capture_dir)
    # A few quick tries of its own; a write that still fails fails the invocation, which Lambda retries.
    s3 = botocore.session.get_session().create_client(
        "s3", config=Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 3})
    )
    return S3RecordStore(s3, current.bucket, current.kms_key)


def reset() -> None:
    """Forget what was built (tests: another environment)."""
    for built in (settings, shadow_teacher, record_store):
        built.cache_clear()
