"""What an evaluation ran over, as digests in its report, so that `eval compare --gate` compares only
runs over the same dataset and can show when their task lists differ."""

from __future__ import annotations

import hashlib


def dataset_sha256(raw: bytes) -> str:
    """The dataset's bytes as read: what `sha256sum FILE` prints."""
    return hashlib.sha256(raw).hexdigest()
