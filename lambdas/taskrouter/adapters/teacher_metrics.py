"""What the teacher function publishes of a label (docs/capture.md, "Metrics"), and the names the
stage's alarms and dashboard read them by (infra/monitoring.py).

Over the uniform sample only (a turn drawn more often, as for unseen tasks, would bias them), each 1 or
0, with the `adapter` and `strategy` dimensions:
- `TeacherAgreement`: every primary answer, escalated ones included: the model's own agreement;
- `TeacherAgreementKept`: the answers the primary kept (not escalated): the quality users get;
- `TeacherAgreementByConfidence`: every primary answer with a confidence, by `band` of it (ten bands
  0.1 wide): the live reliability curve, which a threshold is read against.
"""

from __future__ import annotations

import math

TEACHER_AGREEMENT = "TeacherAgreement"
TEACHER_AGREEMENT_KEPT = "TeacherAgreementKept"
TEACHER_AGREEMENT_BY_CONFIDENCE = "TeacherAgreementByConfidence"
BAND_DIMENSION = "band"
BAND_COUNT = 10


def band_name(index: int) -> str:
    """`0.0-0.1` ... `0.9-1.0`: the band's lower bound (included) and upper bound (excluded, but for the last)."""
    return f"{index / BAND_COUNT:.1f}-{(index + 1) / BAND_COUNT:.1f}"


CONFIDENCE_BANDS = tuple(band_name(index) for index in range(BAND_COUNT))


def confidence_band(confidence: float) -> str:
    """The band of a confidence in [0, 1]: 0.1 is in `0.1-0.2`, 1.0 in `0.9-1.0`."""
    if not 0 <= confidence <= 1:
        raise ValueError("a confidence is a probability, from 0 to 1")
    return CONFIDENCE_BANDS[min(math.floor(confidence * BAND_COUNT), BAND_COUNT - 1)]
