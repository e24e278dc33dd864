"""What a check found: one line, and the exit status all of them add up to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class Status(Enum):
    OK = "ok"
    BLOCKS = "blocks"
    UNCHECKED = "could not be checked"
    SKIPPED = "skipped"
    NOTE = "note"  # what the stage does that its owner should know: nothing to fix


@dataclass(frozen=True)
class Finding:
    check: str  # what was checked, e.g. "lambda concurrency"
    status: Status
    detail: str
    fix: str | None = None  # the command or request that removes what blocks

    def line(self) -> str:
        """One line, whatever AWS's messages hold (some span several)."""
        text = f"{self.status.value}: {self.check}: {self.detail}" + (f". Fix: {self.fix}" if self.fix else "")
        return " ".join(text.split())


def ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.OK, detail)


def blocks(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, Status.BLOCKS, detail, fix)


def unchecked(check: str, detail: str, fix: str | None = None) -> Finding:
    return Finding(check, Status.UNCHECKED, detail, fix)


def skipped(check: str, detail: str) -> Finding:
    return Finding(check, Status.SKIPPED, detail)


def note(check: str, detail: str) -> Finding:
    return Finding(check, Status.NOTE, detail)


ALL_OK, SOMETHING_BLOCKS, SOMETHING_UNCHECKED = 0, 1, 2


def exit_status(findings: Iterable[Finding]) -> int:
    """1 when anything blocks; else 2 when anything could not be checked; else 0 (skipped and notes are fine)."""
    statuses = {finding.status for finding in findings}
    if Status.BLOCKS in statuses:
        return SOMETHING_BLOCKS
    if Status.UNCHECKED in statuses:
        return SOMETHING_UNCHECKED
    return ALL_OK
