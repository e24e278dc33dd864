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
# The longest window: a year, leap day included. A stage keeps records `retention_days` (docs/data.md);
# a longer window would only list more prefixes (one per day) for records already expired.
MAX_SINCE = timedelta(days=366)
_DURATION = re.compile(r"([0-9]+)([mhd])")  # ASCII digits
_MINUTES = {"m": 1, "h": 60, "d": 24 * 60}


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
    """`--since`: minutes, hours or days, as `90m`, `24h`, `7d`, above 0 and at most `MAX_SINCE`."""
    shown = value.strip() if len(value.strip()) <= 20 else f"{value.strip()[:20]}…"
    match = _DURATION.fullmatch(value.strip())
    if match is None or not match.group(1).lstrip("0"):
        raise argparse.ArgumentTypeError(f"takes a duration above 0 in minutes, hours or days (90m, 24h, 7d), not {shown!r}")
    # Bounded before any timedelta is made (1000000000d is past what one holds), and before a number of
    # thousands of digits is read (Python refuses those).
    digits, unit = match.groups()
    if len(digits.lstrip("0")) > 9 or int(digits) * _MINUTES[unit] > MAX_SINCE // timedelta(minutes=1):
        raise argparse.ArgumentTypeError(
            f"takes at most {MAX_SINCE.days}d (a year; a stage keeps its records retention_days), not {shown}: "
            "leave --since out to read every record kept"
        )
    return timedelta(minutes=int(digits) * _MINUTES[unit])


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
