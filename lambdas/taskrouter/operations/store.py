"""Where the alarm handling keeps its state and what it touches: two SSM parameters (the router's
mode, which the router reads, and the handling's state beside it) and the alarm topic, on which each
transition is announced. Used by the handler and by `taskrouter ops mode`."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from taskrouter.core.resilience import OpsMode
from taskrouter.operations.failover import ANNOUNCEMENT_SOURCE, FailoverState, MalformedValue, known_mode, recovered_state


class MalformedParameter(ValueError):
    """A parameter whose value cannot be used: its name, and what is wrong (never the value)."""

    def __init__(self, parameter: str, why: str) -> None:
        super().__init__(f"{parameter} {why}")
        self.parameter = parameter
        self.why = why


@dataclass(frozen=True)
class Snapshot:
    """Both parameters as read: one that is malformed is None, and its problem kept."""

    mode: OpsMode | None
    state: FailoverState | None
    mode_problem: MalformedParameter | None = None
    state_problem: MalformedParameter | None = None

    @property
    def problems(self) -> list[MalformedParameter]:
        return [problem for problem in (self.mode_problem, self.state_problem) if problem is not None]

    def state_to_decide_from(self, now: float) -> FailoverState:
        """The state read, or, when it is malformed, one rebuilt from the mode (which its next write stores)."""
        return self.state or recovered_state(self.mode, now)


@dataclass(frozen=True)
class Operations:
    ssm: Any  # botocore SSM client
    sns: Any | None  # botocore SNS client (None: nothing to announce on, as for the CLI's `show`)
    mode_parameter: str
    state_parameter: str
    topic_arn: str | None
    stage: str

    def mode(self) -> OpsMode:
        """Raises MalformedParameter when it holds no mode, or is absent (deleted by hand)."""
        value = self._value(self.mode_parameter)
        if value is None:
            raise MalformedParameter(self.mode_parameter, "is absent")
        try:
            return known_mode(value)
        except MalformedValue as error:
            raise MalformedParameter(self.mode_parameter, str(error)) from None

    def set_mode(self, mode: OpsMode) -> None:
        self.ssm.put_parameter(Name=self.mode_parameter, Value=mode.value, Type="String", Overwrite=True)

    def state(self) -> FailoverState:
        """The handling's state (the initial one before its first write); raises MalformedParameter."""
        try:
            return FailoverState.from_json(self._value(self.state_parameter))
        except MalformedValue as error:
            raise MalformedParameter(self.state_parameter, f"holds no alarm handling state ({error})") from None

    def read(self) -> Snapshot:
        """Both parameters, whatever they hold."""
        snapshot = Snapshot(mode=None, state=None)
        try:
            snapshot = replace(snapshot, mode=self.mode())
        except MalformedParameter as problem:
            snapshot = replace(snapshot, mode_problem=problem)
        try:
            snapshot = replace(snapshot, state=self.state())
        except MalformedParameter as problem:
            snapshot = replace(snapshot, state_problem=problem)
        return snapshot

    def save(self, state: FailoverState) -> None:
        self.ssm.put_parameter(Name=self.state_parameter, Value=state.to_json(), Type="String", Overwrite=True)

    def announce(self, subject: str, details: dict[str, Any]) -> None:
        """One message on the alarm topic (its e-mail subscribers read it); marked as the handling's
        own, so the handler, subscribed to the same topic, skips it."""
        if self.sns is None or self.topic_arn is None:
            return
        self.sns.publish(
            TopicArn=self.topic_arn,
            Subject=f"TaskRouter {self.stage}: {subject}"[:100],
            Message=json.dumps({"source": ANNOUNCEMENT_SOURCE, "stage": self.stage, "subject": subject, **details}),
            MessageAttributes={"source": {"DataType": "String", "StringValue": ANNOUNCEMENT_SOURCE}},
        )

    def _value(self, name: str) -> str | None:
        try:
            return self.ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            return None
