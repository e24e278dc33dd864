"""Where the alarm handling keeps its state and what it touches: two SSM parameters (the router's
mode, which the router reads, and the handling's state beside it) and the alarm topic, on which each
transition is announced. Used by the handler and by `taskrouter ops mode`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from taskrouter.core.resilience import OpsMode
from taskrouter.operations.failover import ANNOUNCEMENT_SOURCE, FailoverState


@dataclass(frozen=True)
class Operations:
    ssm: Any  # botocore SSM client
    sns: Any | None  # botocore SNS client (None: nothing to announce on, as for the CLI's `show`)
    mode_parameter: str
    state_parameter: str
    topic_arn: str | None
    stage: str

    def mode(self) -> OpsMode:
        return OpsMode(self.ssm.get_parameter(Name=self.mode_parameter)["Parameter"]["Value"].strip())

    def set_mode(self, mode: OpsMode) -> None:
        self.ssm.put_parameter(Name=self.mode_parameter, Value=mode.value, Type="String", Overwrite=True)

    def state(self) -> FailoverState:
        try:
            value = self.ssm.get_parameter(Name=self.state_parameter)["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            return FailoverState()
        return FailoverState.from_json(value)

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
