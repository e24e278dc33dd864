"""Alarm handling (pure): what the router's operations mode becomes when the "primary degraded"
composite alarm changes state, and when a held change becomes due.

- ALARM fails over at once (`openai_only`): users are protected first.
- OK fails back (`primary_first`) only once `hold_s` has passed since the failover and since the
  last ALARM; an OK sooner is kept pending and applied by a later tick (the handler's schedule). So a
  flapping alarm cannot flap the router.
- Each tick also reconciles with what is observed (the alarm's state as CloudWatch reports it, the
  mode parameter's value): a lost notification, a failed write or a mode changed by hand is put right,
  so the router can never stay failed over for good. A mode parameter holding no mode is written
  again, and a recorded alarm time ahead of now (left by a version that recorded future-dated
  notifications) is dropped.
- A notification not newer than the last one applied (a duplicate, or one delivered out of order:
  SNS promises neither order nor once-only delivery) changes nothing. Nor does one dated more than
  `MAX_AHEAD_S` after now: no change CloudWatch has made yet, and, recorded, it would make every
  real change look older.
- A message that is no CloudWatch alarm state change (junk, a state CloudWatch has not, an
  announcement of the handling's own) is refused by `AlarmChange.parse`, which names why without
  repeating the message's content.
- An operator's override is never undone: while one is set, the handler records the alarm's state
  and announces what it would have done, and changes nothing.

The state is one small JSON document (stored by `operations/store.py`); one that is malformed is read
as `MalformedValue`, and `recovered_state` stands in for it until the next write.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

from taskrouter.core.resilience import OpsMode

ALARM, OK, INSUFFICIENT_DATA = "ALARM", "OK", "INSUFFICIENT_DATA"
ALARM_STATES = (OK, ALARM, INSUFFICIENT_DATA)  # CloudWatch's, and no other
MODES = tuple(mode.value for mode in OpsMode)
MAX_AHEAD_S = 300.0  # CloudWatch's clock and Lambda's agree within seconds; 5 minutes ahead is no real change
MALFORMED = "malformed"  # what a transition rewriting a malformed mode parameter comes from
DEFAULT_HOLD_S = 900.0  # 15 minutes on OpenAI before a clear alarm brings the primary back
ANNOUNCEMENT_SOURCE = "taskrouter-alarm-handling"  # marks the handler's own messages on the topic


class NotAnAlarmNotification(ValueError):
    """An SNS message that is not a CloudWatch alarm state change (the handler skips it). Its text says
    why in words of its own, never the message's content, so that it can be logged."""


class MalformedValue(ValueError):
    """A parameter's value that no version of the handling writes (a hand edit, a broken writer); its
    text says what is wrong without the value."""


@dataclass(frozen=True)
class AlarmChange:
    """A CloudWatch alarm state-change notification, as SNS delivers it (metric or composite alarm)."""

    alarm_name: str
    new_state: str
    old_state: str
    changed_at: datetime  # StateChangeTime: CloudWatch's own clock, which orders the changes
    reason: str

    @classmethod
    def parse(cls, message: object) -> AlarmChange:
        """The `Message` of an SNS record: the JSON CloudWatch publishes (AlarmName, NewStateValue,
        OldStateValue, StateChangeTime such as "2026-11-25T17:00:00.000+0000", NewStateReason)."""
        if not isinstance(message, str):
            raise NotAnAlarmNotification("no message")
        try:
            body = json.loads(message)
        except RecursionError:  # nested deeper than the parser's stack
            raise NotAnAlarmNotification("JSON nested too deeply") from None
        except ValueError:
            raise NotAnAlarmNotification("not JSON") from None
        if not isinstance(body, dict):
            raise NotAnAlarmNotification("not a JSON object")
        if body.get("source") == ANNOUNCEMENT_SOURCE:
            raise NotAnAlarmNotification("one of the alarm handling's own announcements")
        name, state, at = body.get("AlarmName"), body.get("NewStateValue"), body.get("StateChangeTime")
        if not isinstance(name, str) or not name:
            raise NotAnAlarmNotification("no AlarmName")
        if state not in ALARM_STATES:
            raise NotAnAlarmNotification("NewStateValue is none of OK, ALARM, INSUFFICIENT_DATA")
        try:
            changed_at = _timestamp(at)
        except ValueError:
            raise NotAnAlarmNotification("StateChangeTime is no time with its zone") from None
        return cls(alarm_name=name, new_state=state, old_state=str(body.get("OldStateValue", "")),
                   changed_at=changed_at, reason=str(body.get("NewStateReason", ""))[:500])


@dataclass(frozen=True)
class Override:
    mode: str
    by: str
    reason: str
    at: str  # ISO time


@dataclass(frozen=True)
class FailoverState:
    alarm_state: str = OK
    alarm_changed_at: str | None = None  # the last applied notification's StateChangeTime (ISO)
    mode: str = OpsMode.PRIMARY_FIRST.value  # the mode the handling last set
    mode_set_at: float | None = None  # epoch seconds
    last_alarm_at: float | None = None  # epoch seconds of the last ALARM applied: the hold counts from it too
    override: Override | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> FailoverState:
        """The state `to_json` wrote (None: none yet). Every field must be there, but those added since
        the first version (`_ADDED_LATER`, null when absent), and sound; a field this version does not
        know is dropped. Raises MalformedValue: a lost `override` must not read as "no override"."""
        if text is None:
            return cls()
        try:
            data = json.loads(text)
        except (RecursionError, ValueError):
            raise MalformedValue("not JSON") from None
        if not isinstance(data, dict):
            raise MalformedValue("not a JSON object")
        missing = sorted(f.name for f in fields(cls) if f.name not in data and f.name not in _ADDED_LATER)
        if missing:
            raise MalformedValue(f"no {', '.join(missing)}")
        for name, sound, what in _STATE_FIELDS:
            if not sound(data.get(name)):
                raise MalformedValue(f"{name} is not {what}")
        override = data["override"]
        return cls(alarm_state=data["alarm_state"], alarm_changed_at=data["alarm_changed_at"], mode=data["mode"],
                   mode_set_at=data["mode_set_at"], last_alarm_at=data.get("last_alarm_at"),
                   override=None if override is None else Override(**{f.name: override[f.name] for f in fields(Override)}))


def _is_time(value: Any) -> bool:
    try:
        _timestamp(value)
    except ValueError:
        return False
    return True


def _is_epoch(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_override(value: Any) -> bool:
    return (isinstance(value, dict) and value.get("mode") in MODES
            and all(isinstance(value.get(f.name), str) for f in fields(Override)))


_ADDED_LATER = {"last_alarm_at"}  # a state the first version wrote lacks them; a field added later joins them
_STATE_FIELDS = (  # (field, its check, what it must be): what `to_json` writes, and nothing else
    ("alarm_state", lambda v: v in (ALARM, OK), "ALARM or OK"),
    ("alarm_changed_at", lambda v: v is None or _is_time(v), "null or a time with its zone"),
    ("mode", lambda v: v in MODES, " or ".join(MODES)),
    ("mode_set_at", lambda v: v is None or _is_epoch(v), "null or epoch seconds"),
    ("last_alarm_at", lambda v: v is None or _is_epoch(v), "null or epoch seconds"),
    ("override", lambda v: v is None or _is_override(v), "null or an override (mode, by, reason, at)"),
)


def known_mode(value: str) -> OpsMode:
    """The mode a parameter's value names; MalformedValue when none (the router then keeps its last)."""
    if value.strip() not in MODES:
        raise MalformedValue(f"holds no mode ({' or '.join(MODES)})")
    return OpsMode(value.strip())


def recovered_state(mode: OpsMode | None, now: float) -> FailoverState:
    """What stands in for a malformed state: the router's mode as it is (primary_first when unknown
    too), the alarm's state as that mode implies, the hold counting from now. The next observation of
    the alarm corrects the rest; an override the lost state held is lost with it."""
    mode = mode or OpsMode.PRIMARY_FIRST
    return FailoverState(alarm_state=ALARM if mode is OpsMode.OPENAI_ONLY else OK, mode=mode.value, mode_set_at=now)


@dataclass(frozen=True)
class Transition:
    to_mode: str
    from_mode: str
    why: str


@dataclass(frozen=True)
class Outcome:
    state: FailoverState
    transition: Transition | None  # set the mode parameter and announce it
    note: str  # logged (and announced when an override held a change back)
    announce_note: bool = False


def on_alarm_change(state: FailoverState, change: AlarmChange, now: float, hold_s: float = DEFAULT_HOLD_S) -> Outcome:
    if change.changed_at.timestamp() > now + MAX_AHEAD_S:
        return Outcome(state, None, f"ignored: {change.new_state} dated {change.changed_at.isoformat()}, more than "
                                    f"{MAX_AHEAD_S:.0f} s ahead of now (a wrong clock or a forged message): not recorded")
    if state.alarm_changed_at is not None and change.changed_at <= _timestamp(state.alarm_changed_at):
        return Outcome(state, None, f"ignored: {change.new_state} of {change.changed_at.isoformat()} is not newer "
                                    f"than the state applied ({state.alarm_changed_at}): a duplicate or out of order")
    if change.new_state not in (ALARM, OK):
        # INSUFFICIENT_DATA: an idle or scaled-to-zero endpoint publishes nothing; that is not degraded.
        recorded = replace(state, alarm_changed_at=change.changed_at.isoformat())
        return Outcome(recorded, None, f"recorded {change.new_state}: no change of mode")
    recorded = replace(state, alarm_state=change.new_state, alarm_changed_at=change.changed_at.isoformat())
    if state.override is not None:
        if change.new_state == ALARM:
            recorded = replace(recorded, last_alarm_at=now)
        wanted = OpsMode.OPENAI_ONLY.value if change.new_state == ALARM else OpsMode.PRIMARY_FIRST.value
        return Outcome(
            recorded, None,
            f"alarm {change.new_state}: would set {wanted}, but the operator's override "
            f"({state.override.mode}, by {state.override.by}) stays in force",
            announce_note=True,
        )
    if change.new_state == ALARM:
        recorded = replace(recorded, last_alarm_at=now)
        if state.mode == OpsMode.OPENAI_ONLY.value:
            return Outcome(recorded, None, "alarm again while failed over: held on OpenAI")
        return _set(recorded, OpsMode.OPENAI_ONLY, now, f"{change.alarm_name} in ALARM: {change.reason}")
    return _fail_back_when_due(recorded, now, hold_s)


@dataclass(frozen=True)
class Observed:
    """What is true now, read at each tick: the alarm as CloudWatch reports it (None: unreadable) and
    the mode parameter's value, which is what the router does."""

    mode: str | None  # None: the parameter holds no mode (absent, or malformed)
    alarm_state: str | None = None
    alarm_changed_at: datetime | None = None


def on_tick(state: FailoverState, now: float, observed: Observed, hold_s: float = DEFAULT_HOLD_S) -> Outcome:
    """The schedule's call: reconcile with what is observed, then apply a fail-back once due. A mode
    parameter holding no mode is written again, with the mode the state then calls for."""
    notes = []
    if _later(state.alarm_changed_at, now + MAX_AHEAD_S):
        notes.append(f"the last alarm change recorded is dated {state.alarm_changed_at}, ahead of now: dropped, "
                     "so that the alarm's changes apply again")
        state = replace(state, alarm_changed_at=None)
    if observed.mode is None:
        notes.append("the mode parameter holds no mode")
        return _rewrite_mode(_reconcile(state, now, observed, hold_s, notes), now)
    if observed.mode != state.mode:
        notes.append(f"the mode parameter says {observed.mode}, the state {state.mode}: the parameter is what the router does")
        state = replace(state, mode=observed.mode, mode_set_at=now)
    return _reconcile(state, now, observed, hold_s, notes)


def _reconcile(state: FailoverState, now: float, observed: Observed, hold_s: float, notes: list[str]) -> Outcome:
    if (observed.alarm_state in (ALARM, OK) and observed.alarm_changed_at is not None
            and observed.alarm_state != state.alarm_state
            and (state.alarm_changed_at is None or observed.alarm_changed_at > _timestamp(state.alarm_changed_at))):
        notes.append(f"the alarm is {observed.alarm_state} since {observed.alarm_changed_at.isoformat()}: a notification was lost")
        missed = AlarmChange("observed", observed.alarm_state, state.alarm_state, observed.alarm_changed_at, "observed at a tick")
        outcome = on_alarm_change(state, missed, now, hold_s)
        return replace(outcome, note="; ".join([*notes, outcome.note]))
    if state.override is not None:
        return Outcome(state, None, "; ".join([*notes, "an override is in force"]))
    if state.alarm_state == ALARM and state.mode != OpsMode.OPENAI_ONLY.value:
        return _set(state, OpsMode.OPENAI_ONLY, now, "; ".join([*notes, "the alarm is in ALARM"]))
    if state.alarm_state == OK and state.mode == OpsMode.OPENAI_ONLY.value:
        outcome = _fail_back_when_due(state, now, hold_s)
        return replace(outcome, note="; ".join([*notes, outcome.note]))
    return Outcome(state, None, "; ".join([*notes, "nothing due"]))


def _rewrite_mode(outcome: Outcome, now: float) -> Outcome:
    """The mode parameter written again, from `MALFORMED` (what the router did meanwhile is not known):
    the mode the outcome sets, else the override's, else the one the handling last set."""
    if outcome.transition is not None:
        return replace(outcome, transition=replace(outcome.transition, from_mode=MALFORMED))
    state = outcome.state
    wanted = state.override.mode if state.override is not None else state.mode
    if wanted != state.mode:
        state = replace(state, mode=wanted, mode_set_at=now)
    why = f"{outcome.note}: set to {wanted}, the mode the handling's state calls for"
    return Outcome(state, Transition(to_mode=wanted, from_mode=MALFORMED, why=why), why)


def set_override(state: FailoverState, mode: OpsMode, by: str, reason: str, at: str) -> FailoverState:
    return replace(state, override=Override(mode.value, by, reason, at))


def clear_override(state: FailoverState, now: float) -> tuple[FailoverState, OpsMode]:
    """Back to the alarm handling: the mode the alarm's recorded state calls for, set now (no hold: an
    operator chose to hand back). A recorded alarm time later than now is dropped: it would make the
    alarm's real changes look older, and the next tick then follows the alarm's actual state. The
    hold restarts only when the mode changes: handing back moves no router that stays on OpenAI."""
    mode = OpsMode.OPENAI_ONLY if state.alarm_state == ALARM else OpsMode.PRIMARY_FIRST
    recorded = replace(state, override=None)
    if _later(state.alarm_changed_at, now):
        recorded = replace(recorded, alarm_changed_at=None)
    if state.last_alarm_at is not None and state.last_alarm_at > now:
        recorded = replace(recorded, last_alarm_at=None)
    if mode.value == state.mode:
        return recorded, mode
    return replace(recorded, mode=mode.value, mode_set_at=now), mode


def _fail_back_when_due(state: FailoverState, now: float, hold_s: float) -> Outcome:
    if state.mode != OpsMode.OPENAI_ONLY.value:
        return Outcome(state, None, "alarm OK: already primary_first")
    held = now - max(state.mode_set_at or 0.0, state.last_alarm_at or 0.0)
    if held < hold_s:
        return Outcome(state, None,
                       f"alarm OK after {held:.0f} s on OpenAI: fail-back held until {hold_s:.0f} s")
    return _set(state, OpsMode.PRIMARY_FIRST, now,
                f"alarm OK and held {held:.0f} s: the primary serves again")


def _set(state: FailoverState, mode: OpsMode, now: float, why: str) -> Outcome:
    transition = Transition(to_mode=mode.value, from_mode=state.mode, why=why)
    return Outcome(replace(state, mode=mode.value, mode_set_at=now), transition, why)


def _later(at: str | None, epoch: float) -> bool:
    """Whether a recorded time (ISO, None: none) is later than `epoch`."""
    return at is not None and _timestamp(at).timestamp() > epoch


def _timestamp(text: object) -> datetime:
    """CloudWatch's "2026-11-25T17:00:00.000+0000" (and ISO with a colon in the offset); ValueError for
    anything else."""
    if not isinstance(text, str):
        raise ValueError("not a time")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"StateChangeTime without a time zone: {text!r}")
    return value
