"""The risk-coverage query of docs/capture.md ("The risk-coverage table from the captured records"): every
column it reads is a column of the Glue table (infra/capture.py), and its arithmetic, run as written on
SQLite, gives what an independent computation over the same records gives.

Athena's part is the struct access (`"primary".probability`, `teacher.answer`, `sampling.uniform`) and
the table; the rest is SQL both engines read alike (a CTE with a column list, VALUES, CASE, CAST AS
DOUBLE, AVG ignoring nulls). SQLite reads `"primary".probability` as the column `probability` of a table
`"primary"`: with one table per struct, joined on the record's id, the query runs unchanged but for its
FROM clause."""

from __future__ import annotations

import random
import re
import sqlite3

import pytest

from infra.capture import DAY_PARTITION, RECORD_COLUMNS
from infra.config import ROOT

DOC = ROOT / "docs" / "capture.md"
SECTION = "### The risk–coverage table from the captured records"
FROM = "FROM taskrouter_<stage>_capture.records"
STRUCTS = ("primary", "teacher", "sampling")


def _query() -> str:
    section = DOC.read_text().split(SECTION, 1)[1]
    (query,) = re.findall(r"```sql\n(.*?)```", section.split("\n### ", 1)[0].split("\n## ", 1)[0], flags=re.DOTALL)
    return query


def _struct_fields(kind) -> set[str]:
    """A Glue struct's field names, from its type string (`struct<answer:string,...>`)."""
    text = kind.input_string
    assert text.startswith("struct<")
    return {part.split(":", 1)[0] for part in re.split(r",(?![^<]*>)", text[len("struct<"):-1])}


def test_the_query_reads_only_columns_of_the_glue_table():
    query = _query()
    assert FROM in query
    used = set(re.findall(r'"?([a-z_]+)"?\.([a-z_]+)', query.replace(FROM, "")))
    assert used, "no struct field read"
    for struct, field in used:
        assert struct in RECORD_COLUMNS, struct
        assert field in _struct_fields(RECORD_COLUMNS[struct]), f"{struct}.{field}"
    for column in ("adapter", "strategy"):
        assert column in RECORD_COLUMNS and column in query
    assert f"WHERE {DAY_PARTITION} >= " in query  # the partitions, so that only those days are read
    assert '"primary".' in query and "primary." not in query.replace('"primary".', "")  # escaped: PRIMARY is reserved


def _records(seed: int) -> list[dict]:
    """Captured records as the Glue table reads them: uniform and not, with and without a confidence or a
    teacher's answer, before and after the query's first day, over two strategies."""
    generate = random.Random(seed)
    records = []
    for index in range(400):
        confidence = None if generate.random() < 0.1 else round(generate.random(), 3)
        if index % 40 == 0:
            confidence = generate.choice([0.5, 0.9])  # on a threshold: kept (>=), not escalated
        primary = generate.choice(["follow_up_email", "prepare_meeting_minutes", "none"])
        # a calibrated-ish primary: the surer, the likelier the teacher says the same
        agrees = generate.random() < (confidence if confidence is not None else 0.5)
        teacher = None if generate.random() < 0.05 else (primary if agrees else "create_one_minute_pitch")
        records.append({
            "id": f"{index:032x}", "adapter": "base", "strategy": generate.choice(["zero_shot", "react"]),
            "day": generate.choice(["2026-11-30", "2026-12-01", "2026-12-02"]),
            "primary": {"answer": primary, "probability": confidence},
            "teacher": {"answer": teacher}, "sampling": {"uniform": generate.random() < 0.8},
        })
    return records


def _expected(records: list[dict], thresholds: list[float]) -> list[tuple]:
    """The table, computed in Python over the same records."""
    rows = []
    kept_records = [r for r in records if r["day"] >= "2026-12-01" and r["sampling"]["uniform"]
                    and r["primary"]["probability"] is not None and r["teacher"]["answer"] is not None]
    for strategy in sorted({r["strategy"] for r in kept_records}):
        turns = [r for r in kept_records if r["strategy"] == strategy]
        for t in thresholds:
            kept = [r for r in turns if r["primary"]["probability"] >= t]
            agreement = (sum(r["primary"]["answer"] == r["teacher"]["answer"] for r in kept) / len(kept)) if kept else None
            rows.append(("base", strategy, t, len(turns), len(kept), len(kept) / len(turns), agreement,
                         (len(turns) - len(kept)) / len(turns)))
    return rows


@pytest.mark.parametrize("seed", [3, 17])
def test_the_query_computes_coverage_kept_agreement_and_escalated_share(seed):
    query = _query()
    thresholds = [float(value) for value in re.findall(r"\(([0-9.]+)\)", query.split("VALUES", 1)[1].split("\n", 1)[0])]
    assert thresholds[0] == 0.0 and thresholds == sorted(thresholds) and len(thresholds) >= 5
    records = _records(seed)
    database = sqlite3.connect(":memory:")
    database.execute("CREATE TABLE records (id TEXT PRIMARY KEY, adapter TEXT, strategy TEXT, day TEXT)")
    database.execute('CREATE TABLE "primary" (id TEXT PRIMARY KEY, answer TEXT, probability REAL)')
    database.execute("CREATE TABLE teacher (id TEXT PRIMARY KEY, answer TEXT)")
    database.execute("CREATE TABLE sampling (id TEXT PRIMARY KEY, uniform BOOLEAN)")
    for r in records:
        database.execute("INSERT INTO records VALUES (?, ?, ?, ?)", (r["id"], r["adapter"], r["strategy"], r["day"]))
        database.execute('INSERT INTO "primary" VALUES (?, ?, ?)', (r["id"], r["primary"]["answer"], r["primary"]["probability"]))
        database.execute("INSERT INTO teacher VALUES (?, ?)", (r["id"], r["teacher"]["answer"]))
        database.execute("INSERT INTO sampling VALUES (?, ?)", (r["id"], r["sampling"]["uniform"]))
    joined = 'FROM records JOIN "primary" USING (id) JOIN teacher USING (id) JOIN sampling USING (id)'
    found = database.execute(query.replace(FROM, joined)).fetchall()
    expected = _expected(records, thresholds)
    assert len(found) == len(expected) == 2 * len(thresholds)
    for got, want in zip(found, expected, strict=True):
        assert got[:5] == want[:5]
        for value, reference in zip(got[5:], want[5:], strict=True):
            assert value == pytest.approx(reference, abs=1e-12) if reference is not None else value is None
    # the threshold 0.0 keeps every answer: its agreement is the model's own, nothing escalated
    first = found[0]
    assert (first[2], first[5], first[7]) == (0.0, 1.0, 0.0)
