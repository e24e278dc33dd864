"""The reviewed copy of a dataset, edited one change at a time and saved after each, atomically.

The original file is never written. Its reviewed copy (`<name>.reviewed.jsonl` beside it, made from
it on the first start) holds the conversations kept, with their labels as corrected; the flags (what
a reviewer wants to look at again) live beside it in `<name>.reviewed.flags.json`, so that the copy
stays in the dataset format. Every write is atomic (`evaluation.files.write_atomically`): a crash
leaves the old state or the new, never half of one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from taskrouter.core.events import derive_event
from taskrouter.evaluation.dataset import Conversation, as_json, load_dataset
from taskrouter.evaluation.files import write_atomically


class ReviewError(ValueError):
    """An edit that does not apply (no such conversation or turn, a label that is not a task)."""


class ReviewStore:
    def __init__(self, source: Path, tasks: list[str], reviewed: Path | None = None) -> None:
        self.source = source
        self.reviewed = reviewed or source.with_name(f"{source.stem}.reviewed.jsonl")
        if self.reviewed.resolve() == source.resolve():
            raise ReviewError("the reviewed copy must be another file than the original, which is never written")
        self.flags_file = self.reviewed.with_name(f"{self.reviewed.stem}.flags.json")
        self._lock = threading.Lock()
        first_start = not self.reviewed.exists()
        if first_start:
            self._conversations = [as_json(c) for c in load_dataset(source)]
        elif self.reviewed.read_text(encoding="utf-8").strip():
            self._conversations = [as_json(c) for c in load_dataset(self.reviewed)]
        else:  # every conversation removed by an earlier review
            self._conversations = []
        self._flagged = self._read_flags()
        labelled = {m["expect"]["task"] for c in self._conversations for m in c["messages"] if "expect" in m}
        self.tasks = sorted(set(tasks) | {task for task in labelled if task is not None})
        if first_start:
            self._save()

    def _read_flags(self) -> set[str]:
        if not self.flags_file.exists():
            return set()
        try:
            flags = json.loads(self.flags_file.read_text(encoding="utf-8"))
        except ValueError:
            flags = None
        if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
            raise ReviewError(f"{self.flags_file}: not a list of conversation ids")
        return set(flags)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "source": str(self.source),
                "reviewed": str(self.reviewed),
                "tasks": self.tasks,
                "conversations": json.loads(json.dumps(self._conversations)),
                "flagged": sorted(self._flagged),
            }

    def set_label(self, conversation_id: str, index: int, task: str | None) -> dict[str, Any]:
        """Label a user turn with `task` (None: no task); the events of the conversation follow."""
        if task is not None and task not in self.tasks:
            raise ReviewError(f"{task!r} is not a task of the list")
        with self._lock:
            conversation = self._find(conversation_id)
            messages = conversation["messages"]
            if not 0 <= index < len(messages) or "expect" not in messages[index]:
                raise ReviewError(f"{conversation_id}: message {index} is not a labelled user turn")
            messages[index]["expect"]["task"] = task
            running = None
            for message in messages:  # every event again: a label changes what the next ones mean
                if "expect" in message:
                    message["expect"]["event"] = derive_event(running, message["expect"]["task"])
                    running = message["expect"]["task"]
            self._save()
            return json.loads(json.dumps(conversation))

    def set_flag(self, conversation_id: str, flagged: bool) -> None:
        with self._lock:
            self._find(conversation_id)
            (self._flagged.add if flagged else self._flagged.discard)(conversation_id)
            write_atomically(self.flags_file, json.dumps(sorted(self._flagged)) + "\n")

    def remove(self, conversation_id: str) -> None:
        with self._lock:
            self._conversations.remove(self._find(conversation_id))
            self._save()
            if conversation_id in self._flagged:
                self._flagged.discard(conversation_id)
                write_atomically(self.flags_file, json.dumps(sorted(self._flagged)) + "\n")

    def _find(self, conversation_id: str) -> dict[str, Any]:
        for conversation in self._conversations:
            if conversation["id"] == conversation_id:
                return conversation
        raise ReviewError(f"no conversation {conversation_id!r}")

    def _save(self) -> None:
        for conversation in self._conversations:  # what is written stays a valid dataset
            Conversation.model_validate(conversation)
        lines = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in self._conversations)
        write_atomically(self.reviewed, lines)
