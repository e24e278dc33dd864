"""Captured records as docs/capture.md describes them, written where `taskrouter data harvest` reads
them: `.local/capture/` or a stage's capture bucket (moto). Shared by the harvest tests."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from taskrouter.adapters.record_store import DirectoryRecordStore, record_body, record_key
from taskrouter.core.events import derive_event

ROOT = Path(__file__).resolve().parents[2]
TASKS = json.loads((ROOT / "tasks" / "default_tasks.json").read_text())["tasks"]
ALLOWED = sorted(TASKS, key=lambda task: task["name"])  # as a record shows them: sorted by name
MINUTES, EMAIL, PITCH = "prepare_meeting_minutes", "follow_up_email", "create_one_minute_pitch"


def ago(**delta: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**delta)


def record(
    text: str,
    *,
    at: datetime,
    decided: str | None,
    teacher: str | None = None,
    fallback_reason: str | None = None,
    teacher_error: str | None = None,
    current_task: str | None = None,
    history: tuple[dict[str, str], ...] = (),
    tasks: list[dict[str, Any]] = ALLOWED,
    requested_tasks: list[str] | None = None,
    schema: int = 2,
) -> dict[str, Any]:
    """One captured turn: the primary's decision (or the fallback's, with `fallback_reason`), and
    the teacher's answer (`teacher`, None for `none`) for a turn the primary decided. With
    `requested_tasks` (the request's allow-list), `tasks` are the allowed ones of the registry, as the
    router records them, and a running task they lack is recorded whole (`running_task`)."""
    primary = fallback_reason is None
    teacher_answer = (teacher or "none") if teacher_error is None else None
    if requested_tasks is not None:
        tasks = [task for task in ALLOWED if task["name"] in requested_tasks]
    shown = {task["name"] for task in tasks}
    running = next((task for task in ALLOWED if task["name"] == current_task and current_task not in shown), None)
    later_fields = {} if schema == 1 else {"requested_tasks": requested_tasks, "running_task": running}
    return {
        "schema": schema,
        "id": uuid.uuid4().hex,
        "time": at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "conversation": [*history, {"role": "user", "content": text}],
        "current_task": current_task,
        "tasks": tasks,
        **later_fields,
        "registry_sha256": "0" * 64,
        "strategy": "zero_shot",
        "adapter": "base",
        "unseen_tasks": [],
        "decision": {
            "task": decided, "event": derive_event(current_task, decided), "backend": "sagemaker" if primary else "openai",
            "fallback_reason": fallback_reason,
        },
        "primary": {"answer": (decided or "none") if primary else None, "probability": None, "latency_ms": 40.0},
        "latency_ms": 52.5,
        "sampling": {"probability": 0.1, "uniform": True, "reason": "primary" if primary else "fallback"},
        "redaction": [],
        "teacher": None if not primary else {
            "model": "gpt-4.1-mini", "strategy": "few_shot_cot", "answer": teacher_answer,
            "agrees": None if teacher_answer is None else teacher_answer == (decided or "none"),
            "latency_ms": 900.0, "error": teacher_error,
        },
    }  # fmt: skip


def time_of(captured: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(captured["time"].replace("Z", "+00:00"))


def key_of(captured: dict[str, Any], hour_of: datetime | None = None) -> str:
    """Its key, as the teacher function makes it: under the date and hour of its time (or of `hour_of`)."""
    return record_key(captured["id"], hour_of or time_of(captured))


def write_local(state_dir: Path, captured: dict[str, Any] | bytes, key: str | None = None) -> None:
    """Into `make local`'s capture folder (`TASKROUTER_LOCAL_DIR`/capture) with the teacher function's
    own store, keyed as in the bucket."""
    body = captured if isinstance(captured, bytes) else record_body(captured)
    DirectoryRecordStore(state_dir / "capture").put(key or key_of(captured), body)  # type: ignore[arg-type]
