"""The reviewed copy of a dataset, edited one change at a time and saved after each, atomically.

The original file is never written. Its reviewed copy (`<name>.reviewed.jsonl` beside it, made from
it on the first start) holds the conversations kept, with their labels as corrected; beside it, so
that the copy stays in the dataset format, `<name>.reviewed.flags.json` lists the conversations
flagged for another look and `<name>.reviewed.removed.json` those removed (so that a conversation
added to the original later is told apart from one removed, and shown). docs/review.md tells more.

An edit changes this review's view only once its write succeeded, so the view is always what is on
disk; and it is never written over a file changed on disk since this review read it (`tracked.py`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskrouter.core.events import derive_event
from taskrouter.evaluation.dataset import Conversation, as_json, load_dataset
from taskrouter.evaluation.files import write_atomically
from taskrouter.review.tracked import ChangedOnDisk, TrackedFile, refuse_if_changed

__all__ = ["ChangedOnDisk", "ReviewError", "ReviewFiles", "ReviewStore", "flag_for_review"]

NAMED_AT_MOST = 10  # ids a notice names; the rest it counts


class ReviewError(ValueError):
    """An edit that does not apply (no such conversation or turn, a label that is not a task)."""


@dataclass(frozen=True)
class ReviewFiles:
    """Where the review of a dataset keeps its work (docs/review.md, Files)."""

    reviewed: Path
    flags: Path
    removed: Path

    @classmethod
    def of(cls, source: Path, reviewed: Path | None = None) -> ReviewFiles:
        reviewed = reviewed or source.with_name(f"{source.stem}.reviewed.jsonl")
        return cls(reviewed, *(reviewed.with_name(f"{reviewed.stem}.{kind}.json") for kind in ("flags", "removed")))


def flag_for_review(source: Path, ids: Iterable[str]) -> Path:
    """Flag conversations of `source` before its review starts (or between two of its sessions), as
    `data harvest` flags its disagreements: added to the flags already kept, none of which is lost.
    The flags file, which `taskrouter review source` reads at start."""
    flags = ReviewFiles.of(source).flags
    write_atomically(flags, json.dumps(sorted((_read_ids(flags) or set()) | set(ids))) + "\n")
    return flags


class ReviewStore:
    def __init__(self, source: Path, tasks: list[str], reviewed: Path | None = None) -> None:
        self.source = source
        files = ReviewFiles.of(source, reviewed)
        self.reviewed, self.flags_file, self.removed_file = files.reviewed, files.flags, files.removed
        if self.reviewed.resolve() == source.resolve():
            raise ReviewError("the reviewed copy must be another file than the original, which is never written")
        self.tasks = list(dict.fromkeys(tasks))  # the task file's, in its order: what a label may be
        self._copy, self._flags, self._removals = map(TrackedFile, (self.reviewed, self.flags_file, self.removed_file))
        self._lock = threading.Lock()
        self._conversations: list[dict[str, Any]] = []
        self._flagged: set[str] = set()
        self._removed: set[str] | None = None  # None: no record (a copy made before removals were recorded)
        self._notices: list[str] = []  # what the reviewer is told once, on the page and at start
        original = [as_json(c) for c in load_dataset(source)]
        if self.reviewed.exists():
            self._read()
            self._take_in(original)
        else:  # the first start: the copy is the whole original, so nothing is removed yet
            (flagged, self._flags.seen), (_, self._removals.seen) = (
                self._flags.read(_read_ids), self._removals.read(lambda path: None)
            )  # fmt: skip
            self._flagged = flagged or set()  # flags outlive a copy deleted to start anew
            self._save_removed(set())
            self._save_conversations(original)

    def state(self) -> dict[str, Any]:
        """What the page shows: the files as they are on disk now."""
        with self._lock:
            if any(file.changed() for file in (self._copy, self._flags, self._removals)):
                try:
                    self._read()
                except ChangedOnDisk:
                    raise
                except (OSError, ValueError) as error:  # edited into something that is no dataset, say
                    raise ChangedOnDisk(f"the review's files changed on disk and do not read now: {error}") from None
            present = {c["id"] for c in self._conversations}
            unknown = self._unknown_tasks()
            notices = self._notices + (
                [f"labels that are no task of the task file: {_some(unknown)}; each is flagged where it stands: "
                 "give it a task of the list, or review with the --tasks file that holds it"] if unknown else []
            )  # fmt: skip
            return {
                "source": str(self.source),
                "reviewed": str(self.reviewed),
                "tasks": self.tasks,
                "unknown_tasks": unknown,
                "notices": notices,
                "conversations": copy.deepcopy(self._conversations),
                "flagged": sorted(self._flagged & present),
            }

    def set_label(self, conversation_id: str, index: int, task: str | None) -> dict[str, Any]:
        """Label a user turn with `task` (None: no task); the events of the conversation follow."""
        if task is not None and task not in self.tasks:
            raise ReviewError(f"{task!r} is not a task of the task file")
        with self._lock:
            self._refuse_if_changed()
            conversation = copy.deepcopy(self._find(conversation_id))
            messages = conversation["messages"]
            if not 0 <= index < len(messages) or "expect" not in messages[index]:
                raise ReviewError(f"{conversation_id}: message {index} is not a labelled user turn")
            allowed = messages[index].get("tasks")  # the turn's allow-list: the router could answer no other task
            if task is not None and allowed is not None and task not in allowed:
                raise ReviewError(f"{task!r} is not among the tasks this turn allowed: {', '.join(allowed) or 'none'}")
            messages[index]["expect"]["task"] = task
            if "source" in messages[index]["expect"]:  # a teacher's label the reviewer set is no longer the teacher's
                messages[index]["expect"]["source"] = "reviewed"
            running = conversation.get("current_task")  # a single-turn line's running task; else none
            for message in messages:  # every event again: a label changes what the next ones mean
                if "expect" in message:
                    message["expect"]["event"] = derive_event(running, message["expect"]["task"])
                    running = message["expect"]["task"]
            self._save_conversations([conversation if c["id"] == conversation_id else c for c in self._conversations])
            return copy.deepcopy(conversation)

    def set_flag(self, conversation_id: str, flagged: bool) -> None:
        with self._lock:
            self._refuse_if_changed()
            self._find(conversation_id)
            self._save_flags(self._flagged | {conversation_id} if flagged else self._flagged - {conversation_id})

    def remove(self, conversation_id: str) -> None:
        with self._lock:
            self._refuse_if_changed()
            conversation = self._find(conversation_id)
            # The record first: should the copy's write fail, a removal recorded but not made is
            # harmless (a conversation the copy holds is shown whatever the record says).
            self._save_removed((self._removed or set()) | {conversation_id})
            self._save_conversations([c for c in self._conversations if c is not conversation])
            if conversation_id in self._flagged:
                # The removal is saved: its answer says so. A flag left on a removed conversation
                # means nothing, is never shown, and goes at the next flag's write.
                with contextlib.suppress(OSError, ChangedOnDisk):
                    self._save_flags(self._flagged - {conversation_id})

    def _find(self, conversation_id: str) -> dict[str, Any]:
        for conversation in self._conversations:
            if conversation["id"] == conversation_id:
                return conversation
        raise ReviewError(f"no conversation {conversation_id!r}")

    def _unknown_tasks(self) -> list[str]:
        labelled = {m["expect"]["task"] for c in self._conversations for m in c["messages"] if "expect" in m}
        return sorted(labelled - {None} - set(self.tasks))

    def _refuse_if_changed(self) -> None:
        """Any file of the review changed on disk means this view is old: no edit is made on it."""
        refuse_if_changed(self._copy, self._flags, self._removals)

    def _read(self) -> None:
        """The view from the files; noted as seen only once all of them read well."""
        (conversations, copy_seen), (flagged, flags_seen), (removed, removals_seen) = (
            self._copy.read(_read_copy), self._flags.read(_read_ids), self._removals.read(_read_ids)
        )  # fmt: skip
        if conversations is None:
            raise ChangedOnDisk(
                f"{self.reviewed} is gone: start `taskrouter review` again to make it anew from {self.source}"
            )
        self._conversations, self._flagged, self._removed = conversations, flagged or set(), removed
        self._copy.seen, self._flags.seen, self._removals.seen = copy_seen, flags_seen, removals_seen

    def _take_in(self, original: list[dict[str, Any]]) -> None:
        """Conversations of the original that the copy lacks and no review removed: added to the
        original since the copy was made. They are appended, and the reviewer told."""
        present = {c["id"] for c in self._conversations}
        missing = [c for c in original if c["id"] not in present and c["id"] not in (self._removed or set())]
        if not missing:
            return
        names = _some([c["id"] for c in missing])
        if self._removed is None:  # made before removals were recorded: a missing one may have been removed
            self._save_removed({c["id"] for c in missing})
            self._notices.append(
                f"{len(missing)} conversations of {self.source.name} are not in its reviewed copy (removed in an "
                f"earlier review, or added to it since): {names}; they count as removed: take their ids out of "
                f"{self.removed_file.name} to have them appended at the next start"
            )
            return
        self._save_conversations(self._conversations + missing)
        self._notices.append(
            f"{len(missing)} conversations added to {self.source.name} since its review began are appended at the end: {names}"
        )

    def _save_conversations(self, conversations: list[dict[str, Any]]) -> None:
        for conversation in conversations:  # what is written stays a valid dataset
            Conversation.model_validate(conversation)
        self._copy.write("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations))
        self._conversations = conversations

    def _save_flags(self, flagged: set[str]) -> None:
        flagged = flagged & {c["id"] for c in self._conversations}
        self._flags.write(json.dumps(sorted(flagged)) + "\n")
        self._flagged = flagged

    def _save_removed(self, removed: set[str]) -> None:
        self._removals.write(json.dumps(sorted(removed)) + "\n")
        self._removed = removed


def _read_copy(path: Path) -> list[dict[str, Any]] | None:
    """The reviewed copy's conversations; None when there is no copy."""
    if not path.exists():
        return None
    if not path.read_text(encoding="utf-8").strip():  # every conversation removed by an earlier review
        return []
    return [as_json(c) for c in load_dataset(path)]


def _read_ids(path: Path) -> set[str] | None:
    """A list of conversation ids (flags, removals); None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        ids = json.loads(text)
    except ValueError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ReviewError(f"{path}: not a list of conversation ids")
    return set(ids)


def _some(ids: list[str]) -> str:
    named = ", ".join(ids[:NAMED_AT_MOST])
    return named if len(ids) <= NAMED_AT_MOST else f"{named} and {len(ids) - NAMED_AT_MOST} more"
