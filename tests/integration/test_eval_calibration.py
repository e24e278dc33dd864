"""`taskrouter eval` records the primary's confidence and calibrates it; `taskrouter eval threshold`
picks a threshold from that report, and the router it configures escalates exactly the turns under it.

The in-process router (`--target local`) over datasets/example.jsonl; its primary the SageMaker double
answering each turn as a scripted model would, with vLLM's logprobs for its answer's tokens; its
fallback the OpenAI double answering each turn's label. The model is confidently wrong on half the
`continue` turns (it ends the running task) and unsure where it is wrong elsewhere: the calibration
must show the first where it hides (the per-event table), and a threshold can catch only the second."""

from __future__ import annotations

import hashlib
import json
import math
import tomllib

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from taskrouter.cli import main

from .servers import Received, Reply, SageMakerRuntimeDouble
from .test_eval import DATASET, TASKS_FILE, TURNS, last_message, oracle_openai, point_the_local_target_at

EXPECTED = {turn.messages[-1]["content"]: turn.expected for turn in TURNS}
STOP = {"token": "<|im_end|>", "logprob": -0.004}  # the end of turn, listed after the answer's tokens


def draw(message: str) -> float:
    """A number in [0, 1) fixed by the message: the scripted model's own whim."""
    return int.from_bytes(hashlib.sha256(message.encode()).digest()[:8], "big") / 2**64


def planned(message: str) -> tuple[str | None, float]:
    """The scripted model's answer (None: no task) and the probability it gives it."""
    expected, u = EXPECTED[message], draw(message)
    if expected.event == "continue" and u < 0.3:
        return None, 0.86 + 0.3 * u  # a confident wrong policy: it ends the running task
    if expected.event == "start" and u < 0.15:
        return None, 0.2 + 2 * u  # wrong, and unsure of it
    return expected.task, 0.45 + 0.54 * u


def logprobs(answer: str, confidence: float) -> list[tuple[str, float]]:
    """The answer's tokens and the stop token, their logprobs summing to log(confidence)."""
    split = len(answer) // 2
    total = math.log(confidence) - STOP["logprob"]
    return [(answer[:split], 0.7 * total), (answer[split:], 0.3 * total), (STOP["token"], STOP["logprob"])]


def sent_confidence(message: str) -> float:
    """exp of the sum of the logprobs the double sends for this turn: what /route must report."""
    answer, confidence = planned(message)
    return math.exp(sum(logprob for _, logprob in logprobs(answer or "none", confidence)))


def scripted_primary() -> SageMakerRuntimeDouble:
    double = SageMakerRuntimeDouble()

    def reply(received: Received) -> Reply:
        answer, confidence = planned(last_message(received))
        text = answer or "none"
        return SageMakerRuntimeDouble.answer(text, logprobs=logprobs(text, confidence))  # vLLM's shape (the double cites it)

    double.always(reply)
    return double


@pytest.fixture
def local_env(monkeypatch):
    sagemaker, openai = scripted_primary(), oracle_openai()
    point_the_local_target_at(monkeypatch, sagemaker, openai)
    yield monkeypatch
    sagemaker.close()
    openai.close()


def evaluate(out) -> dict:
    code = main(["eval", "--dataset", str(DATASET), "--target", "local", "--tasks", str(TASKS_FILE), "--strategy",
                 "zero_shot", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    return json.loads((out / "report.json").read_text())


def test_eval_records_each_turns_confidence_and_its_calibration_matches_an_independent_computation(local_env, tmp_path):
    report = evaluate(tmp_path / "run")
    turns = report["turns"]
    messages = [turn.messages[-1]["content"] for turn in TURNS]
    assert len(EXPECTED) == len(turns) == 81
    for message, turn in zip(messages, turns):
        assert turn["confidence"] == pytest.approx(sent_confidence(message), rel=1e-12), message
        assert turn["primary_task"] == planned(message)[0] and turn["backend"] == "sagemaker"

    calibration = report["metrics"]["calibration"]
    confidence = np.array([t["confidence"] for t in turns])
    right = np.array([t["primary_task"] == t["expected"]["task"] for t in turns])
    assert calibration["answered"] == 81 and calibration["accuracy"] == pytest.approx(right.mean())
    # the reliability bins and the ECE against scikit-learn's calibration_curve (15 uniform bins)
    accuracy, mean_confidence = calibration_curve(right, confidence, n_bins=15, strategy="uniform")
    filled = [b for b in calibration["bins"] if b["count"]]
    assert [b["accuracy"] for b in filled] == pytest.approx(list(accuracy))
    assert [b["confidence"] for b in filled] == pytest.approx(list(mean_confidence))
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 16)[1:-1], confidence), minlength=15)
    assert [b["count"] for b in calibration["bins"]] == list(counts)
    assert calibration["ece"] == pytest.approx(float(np.sum(counts[counts > 0] / 81 * np.abs(accuracy - mean_confidence))))
    # the AURC: the mean risk of the k most confident turns (no two confidences tie here)
    assert len(set(confidence)) == 81
    order = np.argsort(-confidence)
    risks = np.cumsum(~right[order]) / np.arange(1, 82)
    assert calibration["aurc"] == pytest.approx(float(risks.mean()))
    # the confident wrong policy shows in the per-event table, and only there
    at_20 = next(row for row in calibration["at_coverage"] if row["target"] == 0.2)
    assert at_20["by_event"]["continue"]["accuracy"] < 0.5 < at_20["accuracy"]
    assert all(share["accuracy"] in (None, 1.0) for event, share in at_20["by_event"].items() if event != "continue")
    assert calibration["by_event"]["continue"]["aurc"] > 2 * calibration["aurc"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## Calibration of the primary's confidence" in markdown and "| coverage asked | threshold |" in markdown
    assert (tmp_path / "run" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_threshold_picked_from_a_run_escalates_exactly_the_turns_under_it(local_env, tmp_path, capsys):
    first = evaluate(tmp_path / "run")
    capsys.readouterr()
    assert main(["eval", "threshold", str(tmp_path / "run"), "--accuracy", "0.8"]) == 0
    printed = capsys.readouterr().out.splitlines()
    table = printed.index("thresholds = [")
    assert printed[table - 1].startswith("infra/stages.toml, in [dev.confidence] ")
    (entry,) = tomllib.loads("\n".join(printed[table : table + 3]))["thresholds"]
    variable = next(line for line in printed if line.startswith("TASKROUTER_CONFIDENCE_THRESHOLDS="))
    assert json.loads(variable.partition("=")[2].strip("'")) == [entry]
    assert entry == {"strategy": "zero_shot", "adapter": "base", "threshold": entry["threshold"],
                     "tasks_sha256": first["tasks_sha256"]}  # fmt: skip
    threshold = entry["threshold"]
    kept = [t for t in first["turns"] if t["confidence"] >= threshold]
    lower = wilson_lower(sum(t["primary_task"] == t["expected"]["task"] for t in kept), len(kept))
    assert lower >= 0.8  # the promise the command printed
    assert f"keeps {len(kept)} of 81 answered turns" in "\n".join(printed)

    local_env.setenv("TASKROUTER_CONFIDENCE_THRESHOLDS", variable.partition("=")[2].strip("'"))
    second = evaluate(tmp_path / "escalating")
    escalated = [t["fallback_reason"] == "low_confidence" for t in second["turns"]]
    assert escalated == [t["confidence"] < threshold for t in first["turns"]] and any(escalated)
    assert all(t["backend"] == ("openai" if e else "sagemaker") for t, e in zip(second["turns"], escalated))
    # the primary's answer and confidence stay on an escalated turn; the fallback (right) decides it
    assert [(t["confidence"], t["primary_task"]) for t in second["turns"]] == [
        (t["confidence"], t["primary_task"]) for t in first["turns"]
    ]
    assert second["metrics"]["task"]["accuracy"] > first["metrics"]["task"]["accuracy"]


def test_a_target_accuracy_the_run_is_too_small_for_is_refused_with_the_turns_it_needs(local_env, tmp_path, capsys):
    evaluate(tmp_path / "run")
    capsys.readouterr()
    assert main(["eval", "threshold", str(tmp_path / "run"), "--accuracy", "0.99"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "81 answered turns" in captured.err and "needs at least 381" in captured.err  # 0.99 × 1.96² / 0.01 = 380.3


def wilson_lower(successes: int, n: int, z: float = 1.959963984540054) -> float:
    """Wilson's score interval's lower bound, written out (Wilson 1927; z of a 95 % level)."""
    p = successes / n
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
