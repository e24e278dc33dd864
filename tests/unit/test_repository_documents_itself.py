"""The repository documents itself: no file cites a document that is not in it."""

from __future__ import annotations

import re
import subprocess

from taskrouter.openapi import document
from taskrouter.repository import ROOT

_OUTSIDE = re.compile(r"CONTRACT(?:\.md| section| §)|shared/(?:CONTRACT|ARCHITECTURE)")


def test_no_tracked_file_cites_a_document_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    citing = []
    for name in files:
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        citing += [f"{name}: {match.group(0)}" for match in _OUTSIDE.finditer(text)]
    assert citing == []


def test_the_served_openapi_document_points_into_the_repository():
    text = str(document())
    assert not _OUTSIDE.search(text) and "docs/api.md" in text
