"""The evaluation's metrics, against values computed by hand and against scikit-learn."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import classification_report, confusion_matrix

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn on a single label

from taskrouter.core.tasks import TASK_NAME_PATTERN
from taskrouter.evaluation.metrics import ERROR_LABEL, classification, latency_summary, macro

# By hand: labels a, b, none (a null task) and c (only predicted); d only expected.
EXPECTED = ["a", "a", "a", "b", "none", "none", "d"]
PREDICTED = ["a", "a", "b", "b", "none", "c", "none"]


def test_hand_computed_fixture():
    result = classification(EXPECTED, PREDICTED)
    assert result["accuracy"] == pytest.approx(4 / 7)
    assert result["confusion"] == {
        "labels": ["a", "b", "c", "d", "none"],
        "matrix": [
            [2, 1, 0, 0, 0],  # a: two right, one taken for b
            [0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0],  # c: never expected
            [0, 0, 0, 0, 1],  # d: never predicted
            [0, 0, 1, 0, 1],
        ],
    }
    per = result["per_class"]
    assert per["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert per["b"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert per["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # only predicted
    assert per["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # only expected
    assert per["none"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    precision, recall = macro(per)  # over the expected labels a, b, d, none (not c, only predicted)
    assert precision == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert recall == pytest.approx((2 / 3 + 1 + 0 + 0.5) / 4)


def test_empty_input():
    assert classification([], []) == {"accuracy": 0.0, "per_class": {}, "confusion": {"labels": [], "matrix": []}}
    assert macro({}) == (0.0, 0.0)


def test_latency_nearest_rank():
    assert latency_summary([5, 1, 3, 2, 4, 10, 9, 8, 7, 6]) == {"p50": 5, "p90": 9, "p99": 10, "max": 10}
    assert latency_summary([7]) == {"p50": 7, "p90": 7, "p99": 7, "max": 7}
    assert latency_summary([]) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}


def test_failures_are_counted_apart_from_every_label_a_task_named_error_included():
    result = classification(["error", "error", "none"], ["error", ERROR_LABEL, ERROR_LABEL])
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["per_class"] == {  # the failures lower recall and accuracy, never a task's precision
        "error": {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2},
        "none": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
    }
    assert result["confusion"] == {
        "labels": ["error", "none", ERROR_LABEL],  # the failures' column last
        "matrix": [[1, 0, 1], [0, 0, 1], [0, 0, 0]],
    }
    assert not TASK_NAME_PATTERN.fullmatch(ERROR_LABEL)


labels = st.sampled_from(["follow_up_email", "prepare_linkedin_post", "none", "error", "qualify_lead"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(labels, st.one_of(labels, st.just(ERROR_LABEL))), min_size=1, max_size=60))
def test_agrees_with_scikit_learn(pairs):
    expected, predicted = [e for e, _ in pairs], [p for _, p in pairs]
    ours = classification(expected, predicted)
    names = ours["confusion"]["labels"]
    assert ours["confusion"]["matrix"] == confusion_matrix(expected, predicted, labels=names).tolist()
    classes = [name for name in names if name != ERROR_LABEL]
    assert sorted(ours["per_class"]) == classes
    theirs = classification_report(expected, predicted, labels=classes, output_dict=True, zero_division=0)
    for label in classes:
        for metric in ("precision", "recall", "f1"):
            assert ours["per_class"][label][metric] == pytest.approx(theirs[label][f"{metric}-score" if metric == "f1" else metric])
        assert ours["per_class"][label]["support"] == theirs[label]["support"]
    expected_labels = sorted(set(expected))
    macro_theirs = classification_report(expected, predicted, labels=expected_labels, output_dict=True, zero_division=0)
    assert macro(ours["per_class"]) == pytest.approx(
        (macro_theirs["macro avg"]["precision"], macro_theirs["macro avg"]["recall"])
    )
    accuracy = sum(e == p for e, p in pairs) / len(pairs)
    assert ours["accuracy"] == pytest.approx(accuracy)
