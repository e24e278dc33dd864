"""How a teacher invocation shares the time Lambda leaves it (`context.get_remaining_time_in_millis()`)
between its calls, so that a slow call ends as a counted failure before the function's timeout: a
timeout would fail the invocation with nothing said of which call was slow.

With the stage's settings (infra/capture.py: timeout = ceil(teacher 10 s) + 10 s margin = 20 s), an
asynchronous invocation's handler starts with about 20 s left (the init phase has a limit of its own):

    the record's write ends by    start + 20 - 0.5 (return)           = start + 19.5 s
    the teacher's answer ends by  min(asked + 10, start + 19.5 - 2)   = asked + 10 s, asked ~ start

so the write has at least 9.5 s, its tries and their pauses included (deadline_botocore.py). A context
with less time left shortens the teacher first, down to nothing (the sample is then stored `timeout`,
the teacher not asked), then the write. Where the stage stores no records, the teacher may take all but
the return's half second.
"""

from __future__ import annotations

from dataclasses import dataclass

# After the last call: the EMF metrics and the log line printed, the handler returns.
RETURN_S = 0.5
# Kept for the write from the teacher's share: a PutObject of one record (at most 1 MB, the Event payload's
# limit) answers in well under a second within its region; the rest is room for a retry.
WRITE_S = 2.0


@dataclass(frozen=True)
class TeacherDeadlines:
    """Deadlines on `time.monotonic()`'s clock."""

    teacher_ends_at: float  # the teacher's own timeout may end it sooner (ShadowTeacher.label)
    write_ends_at: float | None  # None: the stage stores no records

    @classmethod
    def sharing(cls, remaining_ms: int, stores_records: bool, now: float) -> TeacherDeadlines:
        ends_at = now + remaining_ms / 1000 - RETURN_S
        if not stores_records:
            return cls(ends_at, None)
        return cls(ends_at - WRITE_S, ends_at)
