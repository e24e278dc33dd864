"""Escalation of doubtful answers on a stage: the `confidence` setting checked at synth, handed to the
router, and the `Escalated` share alarmed per strategy against the share the stage planned."""

from __future__ import annotations

import json

import pytest

from infra.config import P90_OVER_BUDGET_SHARE, STAGES_FILE, ConfigError, check_deployable, load_serving, load_stages
from taskrouter.adapters.settings import thresholds_from_env
from taskrouter.core.request import Strategy
from taskrouter.core.router import Threshold
from tests.infra.test_resources import _resources

VALID = STAGES_FILE.read_text()
DIGEST = "ab" * 32
LINE = f'{{ strategy = "zero_shot", adapter = "base", threshold = 0.62, tasks_sha256 = "{DIGEST}" }}'


def _stages_with(tmp_path, old: str, new: str):
    assert old in VALID, old
    path = tmp_path / "stages.toml"
    path.write_text(VALID.replace(old, new, 1))
    return path


def test_escalation_is_off_until_a_threshold_is_calibrated_and_the_router_is_told_nothing(stage):
    assert stage.config.confidence.thresholds == []
    router = next(f for f in _resources(stage.templates["Api"], "AWS::Lambda::Function").values()
                  if f["Properties"].get("Handler") == "taskrouter.handlers.router.handler")
    assert "TASKROUTER_CONFIDENCE_THRESHOLDS" not in router["Properties"]["Environment"]["Variables"]


def test_the_pasted_threshold_line_reaches_the_router_as_it_reads_it(tmp_path):
    stages = load_stages(_stages_with(tmp_path, "[dev.confidence]\nthresholds = []",
                                      f"[dev.confidence]\nthresholds = [{LINE}]"))
    environment = stages["dev"].confidence.environment()
    assert json.loads(environment["TASKROUTER_CONFIDENCE_THRESHOLDS"]) == [
        {"strategy": "zero_shot", "adapter": "base", "threshold": 0.62, "tasks_sha256": DIGEST}]
    assert thresholds_from_env(environment, "base") == {Strategy.ZERO_SHOT: Threshold(0.62, DIGEST)}
    check_deployable(stages["dev"], [], load_serving())  # base needs no adapter


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("planned_escalated_share = 0.05", "planned_escalated_share = 0.1",
         r"\[dev\]: confidence\.planned_escalated_share: Input should be less than 0\.1"),
        ("planned_escalated_share = 0.05", "planned_escalated_share = 0",
         r"\[dev\]: confidence\.planned_escalated_share: Input should be greater than 0"),
        ("min_samples = 100", "min_samples = 0", r"\[dev\]: confidence\.min_samples: Input should be greater than or equal to 1"),
        ("thresholds = []", f"thresholds = [{LINE}, {LINE}]", r"\[dev\]: confidence\.thresholds: .*two thresholds for zero_shot"),
        ("thresholds = []", f"thresholds = [{LINE.replace('0.62', '1.2')}]", r"\[dev\]: confidence\.thresholds\[0\]\.threshold"),
        ("thresholds = []", f"thresholds = [{LINE.replace(DIGEST, 'latest')}]", r"\[dev\]: confidence\.thresholds\[0\]\.tasks_sha256"),
        ("thresholds = []", f"thresholds = [{LINE.replace('zero_shot', 'fast')}]", r"\[dev\]: confidence\.thresholds\[0\]\.strategy"),
    ],
)
def test_a_bad_confidence_setting_is_refused_naming_its_field(tmp_path, old, new, message):
    start = VALID.index("[dev.confidence]")
    section = VALID[start: VALID.index("\n\n", start)]
    with pytest.raises(ConfigError, match=message):
        load_stages(_stages_with(tmp_path, section, section.replace(old, new, 1)))


def test_a_threshold_for_an_adapter_the_stage_does_not_serve_is_refused_at_synth(tmp_path):
    stages = load_stages(_stages_with(tmp_path, "[dev.confidence]\nthresholds = []",
                                      f"[dev.confidence]\nthresholds = [{LINE.replace('base', 'sales-v9')}]"))
    with pytest.raises(ConfigError, match="adapter 'sales-v9' is neither 'base' nor one of the stage's adapters"):
        check_deployable(stages["dev"], [], load_serving())


def test_the_plan_stays_under_what_the_latency_alarms_allow():
    # Every strategy's escalated decision (its primary's timeout plus the fallback's) can run over its
    # budget, so each escalation is a decision the p90 alarm counts against the tenth it allows.
    for config in load_stages().values():
        for budget in config.budgets.values():
            assert budget.primary_timeout_ms + budget.fallback_timeout_ms > budget.latency_ms
        assert config.confidence.planned_escalated_share < P90_OVER_BUDGET_SHARE


def test_the_escalated_share_alarms_per_strategy_over_an_hour_of_enough_answers(stage):
    config = stage.config.confidence
    adapter = stage.config.router_adapter or "base"
    alarms = {a["Properties"]["AlarmName"]: a["Properties"]
              for a in _resources(stage.templates["Monitoring"], "AWS::CloudWatch::Alarm").values()
              if "EscalatedShare" in a["Properties"]["AlarmName"]}
    assert len(alarms) == len(Strategy)
    for strategy in Strategy:
        (props,) = [p for name, p in alarms.items() if f"-EscalatedShare-{strategy.value}-" in name]
        assert props["Threshold"] == config.planned_escalated_share
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert (props["EvaluationPeriods"], props["DatapointsToAlarm"], props["TreatMissingData"]) == (1, 1, "notBreaching")
        (expression,) = [m for m in props["Metrics"] if "Expression" in m]
        assert expression["Expression"] == f"IF(answers >= {config.min_samples}, share, 0)"
        stats = {m["Id"]: m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m}
        assert {k: (s["Stat"], s["Period"], s["Metric"]["MetricName"]) for k, s in stats.items()} == {
            "share": ("Average", 3600, "Escalated"), "answers": ("SampleCount", 3600, "Escalated")}
        assert {d["Name"]: d["Value"] for d in stats["share"]["Metric"]["Dimensions"]} == {
            "service": "taskrouter-router", "adapter": adapter, "strategy": strategy.value}
        assert props["AlarmActions"], "the alarm notifies the topic"
