"""What an evaluation ran over, as digests in its report, so that `eval compare --gate` compares only
runs over the same dataset and can show when their task lists differ."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from taskrouter.core.tasks import Task


def dataset_sha256(raw: bytes) -> str:
    """The dataset's bytes as read: what `sha256sum FILE` prints."""
    return hashlib.sha256(raw).hexdigest()


def tasks_sha256(tasks: Iterable[Task]) -> str:
    """The task list's content (names, descriptions, examples; not versions or times, which differ
    between two registries holding the same tasks), as compact JSON sorted by name."""
    listed = sorted(({"name": t.name, "description": t.description, "examples": list(t.examples)} for t in tasks),
                    key=lambda task: task["name"])  # fmt: skip
    canonical = json.dumps(listed, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
