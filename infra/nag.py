"""cdk-nag (AwsSolutions) findings: acknowledging one where it is accepted, and reading the report.

Every acknowledgement sits beside the resource it concerns, names one finding and says why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aws_cdk import Acknowledgment, Stack, Token, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=finding, reason=reason))


def as_nag_shows(stack: Stack, text: str) -> str:
    """`text` (an ARN built from the stack's pseudo parameters) as cdk-nag writes it in a finding's id:
    an unresolved account, region or partition as `<AWS::AccountId>`, `<AWS::Region>`, `<AWS::Partition>`."""
    for value, shown in ((stack.account, "<AWS::AccountId>"), (stack.region, "<AWS::Region>"),
                         (stack.partition, "<AWS::Partition>")):
        if Token.is_unresolved(value):
            text = text.replace(value, shown)
    return text


def unacknowledged_findings(report_file: Path) -> list[str]:
    """`rule at construct path` for every violation left in a synthesized validation report."""
    if not report_file.exists():
        return []  # no plugin reported anything
    report = json.loads(report_file.read_text())
    return [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
        for construct in violation.get("violatingConstructs", [])
    ]


if __name__ == "__main__":
    findings = unacknowledged_findings(Path(sys.argv[1]))
    for finding in findings:
        print(f"cdk-nag: {finding}", file=sys.stderr)
    sys.exit(1 if findings else 0)
