"""Where an alarm's description sends an operator: a section of docs/runbook.md
(tests/infra/test_operations.py holds every alarm to an existing one)."""

from __future__ import annotations

RUNBOOK = "docs/runbook.md"


def runbook(slug: str) -> str:
    return f"{RUNBOOK}#{slug}"


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it for these plain headings."""
    return heading.lower().replace(" ", "-")
