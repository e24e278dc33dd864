"""Where completed records go (docs/capture.md): the stage's capture bucket, or a folder for `make local`,
both keyed `records/date=YYYY-MM-DD/hour=HH/<id>.json` by the time the router decided."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


class RecordStore(Protocol):
    def put(self, key: str, body: bytes, ends_at: float) -> None:
        """Store `body` under `key` by `ends_at` (on `time.monotonic()`'s clock); raises when it could not."""
        ...


class BoundedCalls(Protocol):
    """A client whose calls end by a deadline (deadline_botocore.DeadlineBoundClient)."""

    def call(self, operation: str, ends_at: float, **params: Any) -> dict[str, Any]: ...


def record_key(record_id: str, decided_at: datetime) -> str:
    """`decided_at` in UTC (a date partition per day and hour, as the Glue table reads them)."""
    return f"records/date={decided_at:%Y-%m-%d}/hour={decided_at:%H}/{record_id}.json"


def record_body(record: dict[str, Any]) -> bytes:
    """One line of JSON, UTF-8, ending in a newline: records concatenated are JSON Lines."""
    try:
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a "\ud800" escape) has no UTF-8: escape everything
        return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")


class S3RecordStore:
    """PutObject through an S3 client whose calls end by their deadline, its tries included. No encryption
    header unless a key is named: the bucket's default encryption (its KMS key) applies then; naming
    `aws:kms` alone would pick the account's AWS-managed `aws/s3` key instead (S3 PutObject,
    `x-amz-server-side-encryption-aws-kms-key-id`)."""

    def __init__(self, s3: BoundedCalls, bucket: str, kms_key: str | None = None) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}

    def put(self, key: str, body: bytes, ends_at: float) -> None:
        self._s3.call(
            "put_object", ends_at,
            Bucket=self._bucket, Key=key, Body=body, ContentType="application/json", **self._encryption,
        )  # fmt: skip

    def __str__(self) -> str:
        return f"s3://{self._bucket}/records/"


class DirectoryRecordStore:
    """The same keys as paths under `root`; each file appears whole or not at all (written beside it,
    then renamed), so that a harvest running meanwhile never reads half a record."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def put(self, key: str, body: bytes, ends_at: float | None = None) -> None:
        """`ends_at` is not needed: a local disk answers or fails, it does not trickle."""
        path = self._root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(body)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def __str__(self) -> str:
        return str(self._root / "records")
