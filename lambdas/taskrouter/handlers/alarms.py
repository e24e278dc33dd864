"""Alarm handling: subscribed to the stage's alarm topic, and called every minute by a schedule.

- A state change of the "primary degraded" composite alarm moves the router's operations mode
  (operations/failover.py: hysteresis, order, duplicates, operator overrides); every transition is
  logged and announced on the topic. Other alarms, the handling's own announcements and junk are
  skipped and counted (`NotificationsSkipped`; the log says why, never what the message held), and
  the batch goes on.
- The schedule reconciles with what is observed (the alarm's state in CloudWatch, the mode parameter),
  so a lost notification or a failed write is put right; applies a fail-back held by the hysteresis
  once due; and, while the router is failed over by the handling (not by an operator's override),
  probes the primary with a few fixed requests (no user content) so that its health data keeps
  coming: the same `PrimaryFailure` metric the router publishes, which lets the alarm clear.
- A parameter holding what no version writes (a hand edit) is reported (a warning, `ParameterMalformed`)
  and repaired by the next write: the mode from the handling's state, the state rebuilt from the
  router's mode and the alarm's observed state (failover.recovered_state), and announced.

Its concurrency is reserved to one (infra/monitoring.py): notifications are applied one at a time,
so the state's read-then-write needs no lock.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import botocore.session
from aws_lambda_powertools import Logger, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config

from taskrouter.core.backends import BackendFailure, BackendNoCapacity
from taskrouter.core.prompting import InvalidOutput, build_prompt
from taskrouter.core.request import Message, Strategy
from taskrouter.core.resilience import OpsMode
from taskrouter.core.tasks import Task
from taskrouter.operations import failover
from taskrouter.operations.store import Operations, Snapshot

logger = Logger()

_session = botocore.session.get_session()
_config = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
OPERATIONS = Operations(
    ssm=_session.create_client("ssm", config=_config),
    sns=_session.create_client("sns", config=_config),
    mode_parameter=os.environ.get("TASKROUTER_OPS_MODE_PARAMETER", ""),
    state_parameter=os.environ.get("TASKROUTER_FAILOVER_STATE_PARAMETER", ""),
    topic_arn=os.environ.get("TASKROUTER_ALARM_TOPIC_ARN"),
    stage=os.environ.get("TASKROUTER_STAGE", ""),
)
DEGRADED_ALARM = os.environ.get("TASKROUTER_DEGRADED_ALARM_NAME", "")
# The metric alarms its rule is the OR of: their states say the composite's (see _observe)
DEGRADED_CHILDREN = [name for name in os.environ.get("TASKROUTER_DEGRADED_CHILD_ALARMS", "").split(",") if name]
HOLD_S = float(os.environ.get("TASKROUTER_FAILBACK_HOLD_S", failover.DEFAULT_HOLD_S))
PROBES_PER_TICK = 3  # one slow handshake is then a third of a minute's datapoint, not all of it
_cloudwatch = _session.create_client("cloudwatch", config=_config)
PRIMARY_METRICS_SERVICE = os.environ.get("TASKROUTER_PRIMARY_METRICS_SERVICE", "taskrouter-router")
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "taskrouter-alarm-handling")

# The probe: a fixed conversation and task list, built into the router's own prompt.
PROBE_TASKS = {
    task.name: task
    for task in (
        Task(name="meeting_recap", description="Summarise a sales meeting: attendees, decisions, next steps.",
             examples=("recap my call with Acme",), version=1, updated_at=""),
        Task(name="follow_up_email", description="Draft a follow-up e-mail to a prospect after a meeting.",
             examples=("write a follow-up to Dana",), version=1, updated_at=""),
    )
}
PROBE_CONVERSATION = [Message(role="user", content="Can you write up a recap of this morning's call with Acme?")]
_probe_backend: Any = None


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    now = time.time()
    if event.get("source") == "aws.events":  # the schedule
        return _tick(now)
    applied, skipped = 0, Counter[str]()
    for record in event.get("Records", []):
        try:
            change = failover.AlarmChange.parse(_message(record))
        except failover.NotAnAlarmNotification as why:
            skipped[str(why)] += 1
            continue
        if change.alarm_name != DEGRADED_ALARM:
            skipped["another alarm"] += 1
            continue
        snapshot = _read()
        _apply(failover.on_alarm_change(snapshot.state_to_decide_from(now), change, now, HOLD_S), change.new_state, snapshot)
        applied += 1
    if skipped:
        # why, in the parser's words, and how many: a message's content is never logged
        logger.warning("skipped messages of the topic", extra={"skipped": skipped.total(), "why": dict(skipped)})
        _count("NotificationsSkipped", skipped.total())
    return {"applied": applied, "skipped": skipped.total()}


def _message(record: Any) -> object:
    sns = record.get("Sns") if isinstance(record, dict) else None
    return sns.get("Message") if isinstance(sns, dict) else None


def _read() -> Snapshot:
    """Both parameters; each malformed one reported. The tick writes both again (the mode the state
    calls for; the state rebuilt from the mode and the alarm's state), a notification the state."""
    snapshot = OPERATIONS.read()
    for problem in snapshot.problems:
        logger.warning("a parameter is malformed", extra={"parameter": problem.parameter, "why": problem.why})
        _count("ParameterMalformed", 1)
    return snapshot


def _count(metric: str, value: int) -> None:
    with single_metric(name=metric, unit=MetricUnit.Count, value=value) as published:
        published.add_dimension(name="service", value=SERVICE)


def _tick(now: float) -> dict[str, Any]:
    snapshot = _read()
    outcome = failover.on_tick(snapshot.state_to_decide_from(now), now, _observe(snapshot.mode), HOLD_S)
    if outcome.transition is not None or outcome.state != snapshot.state:  # a malformed state: rebuilt
        _apply(outcome, "tick", snapshot)
    probed = None
    if outcome.state.mode == OpsMode.OPENAI_ONLY.value and outcome.state.override is None:
        # not under an override: the operator may have taken the primary away on purpose (and a probe
        # would wake a dev endpoint scaled to zero)
        results = [probe_primary() for _ in range(PROBES_PER_TICK)]
        probed = None if all(r is None for r in results) else all(r is not False for r in results)
    return {"transition": outcome.transition.to_mode if outcome.transition else None, "probed": probed}


def _observe(known: OpsMode | None) -> failover.Observed:
    """The mode parameter (None: it holds none), and the composite alarm's state as its rule makes it
    from its children's (any in ALARM: ALARM; else OK), read with DescribeAlarms on the children by
    name: the handler's role may read them, and no composite alarm is returned to a caller not allowed
    every alarm."""
    mode = known.value if known else None
    if not DEGRADED_CHILDREN:
        return failover.Observed(mode=mode)
    try:
        children = _cloudwatch.describe_alarms(AlarmNames=DEGRADED_CHILDREN, AlarmTypes=["MetricAlarm"])["MetricAlarms"]
    except Exception as error:  # CloudWatch unreadable: the notifications and the hold still apply
        logger.warning("alarm state unreadable", extra={"error": type(error).__name__, "detail": str(error)[:200]})
        return failover.Observed(mode=mode)
    if not children:
        return failover.Observed(mode=mode)
    alarming = [c for c in children if c["StateValue"] == failover.ALARM]
    deciding = alarming or children  # the latest change among those that make the state
    changed = max(c.get("StateTransitionedTimestamp") or c["StateUpdatedTimestamp"] for c in deciding)
    return failover.Observed(mode=mode, alarm_state=failover.ALARM if alarming else failover.OK, alarm_changed_at=changed)


def _apply(outcome: failover.Outcome, cause: str, read: Snapshot) -> None:
    if outcome.transition is not None:
        # The mode first: users are protected even if the state's write fails; the next tick reads the
        # mode parameter and puts the state right (failover.on_tick).
        OPERATIONS.set_mode(OpsMode(outcome.transition.to_mode))
    OPERATIONS.save(outcome.state)
    if outcome.transition is not None:
        logger.warning(
            "operations mode changed",
            extra={"from": outcome.transition.from_mode, "to": outcome.transition.to_mode,
                   "why": outcome.transition.why, "cause": cause},
        )
        subject = _SUBJECTS.get(outcome.transition.from_mode) or _SUBJECTS[outcome.transition.to_mode]
        OPERATIONS.announce(subject, {"from": outcome.transition.from_mode, "to": outcome.transition.to_mode,
                                      "why": outcome.transition.why, "runbook": "docs/runbook.md#primary-degraded"})
    else:
        logger.info("no change of mode", extra={"note": outcome.note, "cause": cause})
        if outcome.announce_note:
            OPERATIONS.announce("alarm handling held back by an override", {"note": outcome.note})
    if read.state_problem is not None:  # told once written back: what it held is gone, an override included
        OPERATIONS.announce("alarm handling state rebuilt", {
            "parameter": read.state_problem.parameter, "why": read.state_problem.why,
            "note": "rebuilt from the router's mode and the alarm's state; an operator's override it held is lost: "
                    "set it again with `taskrouter ops mode set`",
            "runbook": "docs/runbook.md#primary-degraded",
        })


_SUBJECTS = {
    failover.MALFORMED: "mode parameter repaired",
    OpsMode.OPENAI_ONLY.value: "routing failed over to OpenAI",
    OpsMode.PRIMARY_FIRST.value: "routing back on the primary",
}


def probe_primary() -> bool | None:
    """One routing request to the primary, its answer checked by the router's own parser; the
    outcome published as the router's `PrimaryFailure` (1 failed, 0 answered). None: no primary, or
    no copy serving (scaled to zero is not degraded, and is not counted)."""
    backend = _primary()
    if backend is None:
        return None
    prompt = build_prompt(Strategy.ZERO_SHOT, PROBE_CONVERSATION, PROBE_TASKS, None)
    timeout_s = float(os.environ.get("TASKROUTER_PRIMARY_TIMEOUT_MS", "250")) / 1000
    started = time.perf_counter()
    try:
        backend.decide(prompt, timeout_s)  # parsed by the router's own parser: a wrong format raises
        failed = False
    except BackendNoCapacity:
        logger.info("probe: the primary has no serving copy")
        return None
    except (BackendFailure, InvalidOutput) as error:
        logger.info("probe: the primary failed", extra={"error": type(error).__name__})
        failed = True
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    with single_metric(name="PrimaryFailure", unit=MetricUnit.Count, value=int(failed)) as metric:
        metric.add_dimension(name="service", value=PRIMARY_METRICS_SERVICE)
    logger.info("probe", extra={"failed": failed, "latency_ms": latency_ms})
    return not failed


def _primary() -> Any:
    global _probe_backend
    endpoint = os.environ.get("TASKROUTER_SAGEMAKER_ENDPOINT")
    if not endpoint:
        return None
    if _probe_backend is None:
        from taskrouter.adapters.sagemaker_backend import SageMakerBackend

        timeout_s = float(os.environ.get("TASKROUTER_PRIMARY_TIMEOUT_MS", "250")) / 1000
        client = _session.create_client(
            "sagemaker-runtime",
            config=Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"total_max_attempts": 1}),
        )
        _probe_backend = SageMakerBackend({timeout_s: client}, endpoint, os.environ.get("TASKROUTER_SAGEMAKER_COMPONENT"))
    return _probe_backend
