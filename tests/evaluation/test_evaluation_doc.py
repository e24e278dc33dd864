"""docs/evaluation.md is held to the code: every option of `taskrouter eval`, `eval compare` and `eval
threshold`, every column of the comparison and the pseudo-labels are documented."""

from pathlib import Path

from taskrouter.evaluation.cli import _compare_parser, _eval_parser, _threshold_parser
from taskrouter.evaluation.compare import COLUMNS
from taskrouter.evaluation.metrics import ERROR_LABEL
from taskrouter.evaluation.report import OTHER_LABEL

DOC = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()


def test_every_option_is_documented():
    for parser in (_eval_parser(), _compare_parser(), _threshold_parser()):
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in DOC, flag


def test_the_comparison_columns_and_the_pseudo_labels_are_documented():
    assert "| " + " | ".join(COLUMNS) + " |" in DOC
    assert f"`{ERROR_LABEL}`" in DOC and f"`{OTHER_LABEL}`" in DOC


def test_the_threshold_commands_usage_line_is_the_documented_one():
    from taskrouter.evaluation import cli

    usage = "taskrouter eval threshold DIR (--accuracy A | --max-escalated S) [--adapter NAME|DIR] [--stage STAGE] [--strategy S] [--level L]"
    assert usage in DOC
    assert " ".join(usage.split()) in " ".join((cli.__doc__ or "").split())
