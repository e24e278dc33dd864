"""What the stage's quality measurement sends out of AWS, and how to stop it (docs/capture.md): said on
every run, from infra/stages.toml, so that no one deploys it without knowing."""

from __future__ import annotations

from taskrouter.doctor.findings import Finding, note
from taskrouter.doctor.stage import StageSettings

CHECK = "quality sampling"


def sampling(stage: StageSettings) -> Finding:
    capture = stage.capture
    if capture is None or capture.share == 0:
        return note(CHECK, f"the stage sends no turn to a teacher (capture.share 0 in {stage.table}): its quality is not measured")
    switch = f"/taskrouter/{stage.name}/capture"
    unseen = (f"; of the rest, a share of {capture.unseen_share:g} of those with tasks the serving adapter was not "
              "trained on" if capture.stores_records and capture.unseen_share > 0 else "")
    kept = ("their records, labelled, are kept in the stage's capture bucket" if capture.stores_records
            else "no record is kept")
    return note(CHECK, (
        f"the router sends a redacted sample of the turns the primary answered (a share of {capture.share:g}{unseen}) "
        f"to OpenAI ({capture.teacher_model}) for the teacher to label: turns that would otherwise not leave AWS; "
        f"{kept}. To stop it with no deploy, within a minute: aws ssm put-parameter --region {stage.region} --name "
        f"{switch} --value off --overwrite (--value on resumes it); for good: capture.share = 0 with "
        f"capture.enabled = false in {stage.table}, then `npx cdk deploy '{stage.name}/*'`"
    ))
