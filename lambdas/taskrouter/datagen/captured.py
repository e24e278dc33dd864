"""Where `taskrouter data harvest` reads captured records (docs/capture.md): a stage's capture bucket,
or `.local/capture/` for `make local`, both keyed `records/date=YYYY-MM-DD/hour=HH/<id>.json`.

A window (`--since`) lists only the prefixes it covers: whole days as one prefix, the hours of a day
it covers in part one prefix each, so that a week's harvest never lists the bucket's whole history.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

RECORDS = "records/"
READERS = 16  # records fetched at once from a bucket: one small GET each
_DURATION = re.compile(r"(\d+)([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class CaptureStore(Protocol):
    """Captured records by key, wherever they are kept."""

    def keys(self, prefix: str) -> Iterator[str]: ...

    def read(self, key: str) -> bytes: ...


@dataclass(frozen=True)
class LocalCapture:
    """`make local`'s records: the bucket's keys as paths under `root` (`.local/capture/`)."""

    root: Path

    def keys(self, prefix: str) -> Iterator[str]:
        folder = self.root / prefix
        if folder.is_dir():
            yield from sorted(path.relative_to(self.root).as_posix() for path in folder.rglob("*.json") if path.is_file())

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


@dataclass(frozen=True)
class BucketCapture:
    """A stage's capture bucket, through a boto3 S3 client."""

    s3: Any
    bucket: str

    def keys(self, prefix: str) -> Iterator[str]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from (item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".json"))

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()


def duration(value: str) -> timedelta:
    """`--since`: minutes, hours or days, as `90m`, `24h`, `7d`."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"takes a duration above 0 in minutes, hours or days (90m, 24h, 7d), not {value!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def prefixes(start: datetime | None, now: datetime) -> list[str]:
    """The key prefixes that hold the records from `start` to `now` (UTC); all of them without `start`."""
    if start is None:
        return [RECORDS]
    hour = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    last = now.astimezone(timezone.utc)
    chosen: list[str] = []
    while hour <= last:
        day = f"{RECORDS}date={hour:%Y-%m-%d}/"
        if hour.hour == 0 and hour + timedelta(days=1) <= last:  # the whole day is in the window
            chosen.append(day)
            hour += timedelta(days=1)
        else:
            chosen.append(f"{day}hour={hour:%H}/")
            hour += timedelta(hours=1)
    return chosen


def read_records(store: CaptureStore, under: list[str]) -> list[bytes]:
    """Every record under the prefixes, read `READERS` at once, in key order."""
    keys = [key for prefix in under for key in store.keys(prefix)]
    with futures.ThreadPoolExecutor(max_workers=READERS) as pool:
        return list(pool.map(store.read, keys))
