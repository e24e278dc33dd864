"""Alarm handling (pure): what the router's operations mode becomes when the "primary degraded"
composite alarm changes state, and when a held change becomes due.

- ALARM fails over at once (`openai_only`): users are protected first.
- OK fails back (`primary_first`) only once `hold_s` has passed since the failover and since the
  last ALARM; an OK sooner is kept pending and applied by a later tick (the handler's schedule). So a
  flapping alarm cannot flap the router.
- Each tick also reconciles with what is observed (the alarm's state as CloudWatch reports it, the
  mode parameter's value): a lost notification, a failed write or a mode changed by hand is put right,
  so the router can never stay failed over for good.
- A notification not newer than the last one applied (a duplicate, or one delivered out of order:
  SNS promises neither order nor once-only delivery) changes nothing.
- An operator's override is never undone: while one is set, the handler records the alarm's state
  and announces what it would have done, and changes nothing.

The state is one small JSON document (stored by `operations/store.py`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from taskrouter.core.resilience import OpsMode

ALARM, OK, INSUFFICIENT_DATA = "ALARM", "OK", "INSUFFICIENT_DATA"
DEFAULT_HOLD_S = 900.0  # 15 minutes on OpenAI before a clear alarm brings the primary back
ANNOUNCEMENT_SOURCE = "taskrouter-alarm-handling"  # marks the handler's own messages on the topic


class NotAnAlarmNotification(ValueError):
    """An SNS message that is not a CloudWatch alarm state change (the handler skips it)."""


@dataclass(frozen=True)
class AlarmChange:
    """A CloudWatch alarm state-change notification, as SNS delivers it (metric or composite alarm)."""

    alarm_name: str
    new_state: str
    old_state: str
    changed_at: datetime  # StateChangeTime: CloudWatch's own clock, which orders the changes
    reason: str

    @classmethod
    def parse(cls, message: str) -> AlarmChange:
        """The `Message` of an SNS record: the JSON CloudWatch publishes (AlarmName, NewStateValue,
        OldStateValue, StateChangeTime such as "2026-11-25T17:00:00.000+0000", NewStateReason)."""
        try:
            body = json.loads(message)
        except ValueError:
            raise NotAnAlarmNotification("not JSON") from None
        if not isinstance(body, dict):
            raise NotAnAlarmNotification("not a JSON object")
        if body.get("source") == ANNOUNCEMENT_SOURCE:
            raise NotAnAlarmNotification("one of the alarm handling's own announcements")
        try:
            return cls(
                alarm_name=str(body["AlarmName"]),
                new_state=str(body["NewStateValue"]),
                old_state=str(body.get("OldStateValue", "")),
                changed_at=_timestamp(str(body["StateChangeTime"])),
                reason=str(body.get("NewStateReason", ""))[:500],
            )
        except (KeyError, ValueError) as error:
            raise NotAnAlarmNotification(f"no alarm state change ({error})") from None


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
        if not text:
            return cls()
        data = json.loads(text)
        known = {name for name in cls.__dataclass_fields__}  # a field added or dropped by a later version
        override = data.pop("override", None)
        return cls(**{k: v for k, v in data.items() if k in known and k != "override"},
                   override=Override(**override) if override else None)


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

    mode: str
    alarm_state: str | None = None
    alarm_changed_at: datetime | None = None


def on_tick(state: FailoverState, now: float, observed: Observed, hold_s: float = DEFAULT_HOLD_S) -> Outcome:
    """The schedule's call: reconcile with what is observed, then apply a fail-back once due."""
    notes = []
    if observed.mode != state.mode:
        notes.append(f"the mode parameter says {observed.mode}, the state {state.mode}: the parameter is what the router does")
        state = replace(state, mode=observed.mode, mode_set_at=now)
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


def set_override(state: FailoverState, mode: OpsMode, by: str, reason: str, at: str) -> FailoverState:
    return replace(state, override=Override(mode.value, by, reason, at))


def clear_override(state: FailoverState, now: float) -> tuple[FailoverState, OpsMode]:
    """Back to the alarm handling: the mode the alarm's state calls for, set now (no hold: an operator
    chose to hand back)."""
    mode = OpsMode.OPENAI_ONLY if state.alarm_state == ALARM else OpsMode.PRIMARY_FIRST
    return replace(state, override=None, mode=mode.value, mode_set_at=now), mode


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


def _timestamp(text: str) -> datetime:
    """CloudWatch's "2026-11-25T17:00:00.000+0000" (and ISO with a colon in the offset)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"StateChangeTime without a time zone: {text!r}")
    return value
