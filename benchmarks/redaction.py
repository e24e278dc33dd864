"""What redaction costs a sampled turn, and that hostile text costs time linear in its length.

    .venv/bin/python benchmarks/redaction.py [--runs N]

Times `redact` (both kinds) over: a record as capture builds it (its messages fill the transcript's
bound, with addresses and numbers written as people write them), in ASCII and in a mix of scripts;
then each hostile input of tests/unit/test_redaction.py at its 4,000 characters and repeated 50 times
(200,000 characters, a whole request's worth). Linear work shows as a ratio near 50 between the two;
a pattern that backtracks shows as a ratio in the thousands. Figures only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "lambdas"))

from taskrouter.core.prompting import MAX_TRANSCRIPT_BYTES  # noqa: E402
from taskrouter.core.redaction import redact  # noqa: E402
from tests.unit.test_redaction import PATHOLOGICAL  # noqa: E402

BOTH = ("email", "phone")
SCALE = 50  # a request holds up to 50 messages of 4,000 characters

_ASCII_SENTENCE = (
    "I met Dana Smith (dana.smith+acme@acme-corp.co.uk, +44 20 7946 0958) on 2024-05-01 at 10:30 about "
    "order 12345 and the 1,500,000 dollars; call her on 555-123-4567 x89 or see https://wa.me/33612345678. "
)
_MIXED_SENTENCE = (
    "Rendez-vous le 01.05.2024 avec Dana, 06\u202f12\u202f34\u202f56\u202f78, o'brien@example.ie; "
    "请发邮件到dana@acme.com谢谢, 電話03-1234-5678, пользователь@пример.рф, ０６１２３４５６７８. "
)


def _record(sentence: str) -> str:
    return (sentence * (MAX_TRANSCRIPT_BYTES // len(sentence) + 1))[:MAX_TRANSCRIPT_BYTES]


def _median_ms(text: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        redact(text, BOTH)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for name, sentence in (("ASCII", _ASCII_SENTENCE), ("mixed scripts", _MIXED_SENTENCE)):
        text = _record(sentence)
        print(f"a record's messages, {name} ({len(text):,} characters): median {_median_ms(text, args.runs):.2f} ms")
    large_runs = args.runs // 4 or 1
    print(f"\nhostile inputs: {len(PATHOLOGICAL[0][1]):,} characters, then x{SCALE} (median of {large_runs} runs)")
    for name, text, _expected in PATHOLOGICAL:
        small = _median_ms(text, args.runs)
        large = _median_ms(text * SCALE, large_runs)
        print(f"  {name:<42} {small:8.2f} ms {large:10.1f} ms  ratio {large / small:6.1f}")


if __name__ == "__main__":
    main()
