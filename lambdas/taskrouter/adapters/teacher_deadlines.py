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

Where the function checks its deliveries (teacher_deliveries.py, in AWS), the last call marks the turn
handled: the work before it ends DELIVERY_CALL_S sooner (start + 18.5 s), the first call is bounded by
the same second and counted in what follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskrouter.adapters.teacher_deliveries import DELIVERY_CALL_S

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
    calls_end_at: float  # every call's, the deliveries' last included: what the return leaves

    @classmethod
    def sharing(cls, remaining_ms: int, stores_records: bool, now: float, checks_deliveries: bool = False) -> TeacherDeadlines:
        calls_end_at = now + remaining_ms / 1000 - RETURN_S
        work_ends_at = calls_end_at - (DELIVERY_CALL_S if checks_deliveries else 0)
        if not stores_records:
            return cls(work_ends_at, None, calls_end_at)
        return cls(work_ends_at - WRITE_S, work_ends_at, calls_end_at)
