"""Where the tools find the repository's own files (never used in a Lambda, never in its bundle)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TASKS_FILE = ROOT / "tasks" / "default_tasks.json"  # the default task list a new registry starts with
