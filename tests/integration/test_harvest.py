"""`taskrouter data harvest`: captured records, from `.local/capture/` and from a stage's capture
bucket (moto, the bucket named by stack `<stage>-Capture`), as a single-turn dataset and its task
list, which `taskrouter eval --tasks` routes and `taskrouter review` shows with its flags."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from taskrouter.adapters.record_store import record_body
from taskrouter.cli import main
from taskrouter.core.task_spec import load_task_file
from taskrouter.datagen.captured import prefixes
from taskrouter.evaluation.dataset import load_dataset, turns_of
from taskrouter.review.store import ReviewStore

from .capture_records import ALLOWED, EMAIL, MINUTES, PITCH, ago, key_of, record, write_local
from .servers import OpenAIDouble
from .test_eval import last_message


def harvest(*args: str) -> int:
    return main(["data", "harvest", *args])


@pytest.fixture
def local_dir(tmp_path, monkeypatch) -> Path:
    state = tmp_path / "local-state"
    monkeypatch.setenv("TASKROUTER_LOCAL_DIR", str(state))
    return state


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def the_loop_records() -> dict[str, dict]:
    """A day of captured turns: agreements, a disagreement, the fallback's turn, a failed teacher,
    a duplicate, and a task whose text changed between two records."""
    renamed = [dict(task, description="Write the minutes of a call: who, what was decided, who does what.")
               if task["name"] == MINUTES else task for task in ALLOWED]  # fmt: skip
    return {
        "agrees": record("draft the follow up email to Sam", at=ago(hours=5), decided=EMAIL, teacher=EMAIL),
        "disagrees": record("minutes from my acme call pls", at=ago(hours=4), decided=None, teacher=MINUTES),
        "fallback": record("make it shorter", at=ago(hours=3), decided=EMAIL, fallback_reason="timeout",
                           current_task=EMAIL,
                           history=({"role": "user", "content": "email Dana"}, {"role": "assistant", "content": "Sent."})),
        "teacher_failed": record("a pitch for our app", at=ago(hours=2), decided=PITCH, teacher_error="timeout"),
        "ends": record("thanks, that's all", at=ago(minutes=10), decided=None, teacher=None, current_task=PITCH,
                       tasks=renamed),
        "duplicate": record("draft the follow up email to Sam", at=ago(minutes=30), decided=EMAIL, teacher=EMAIL),
    }  # fmt: skip


def test_local_records_make_a_dataset_review_flags_and_eval_routes(local_dir, tmp_path, capsys, monkeypatch):
    records = the_loop_records()
    for captured in records.values():
        write_local(local_dir, captured)
    write_local(local_dir, b"{not json", key=key_of(records["agrees"]).replace(records["agrees"]["id"], "f" * 32))
    out = tmp_path / "harvested.jsonl"

    assert harvest("--local", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "4 turns harvested to" in captured.out and "the 1 where the teacher disagreed first" in captured.out
    assert ("7 records read" in captured.err and "1 whose teacher failed, 1 unusable, 0 sharing the id of a newer "
            "record and 1 duplicates skipped" in captured.err)  # fmt: skip
    assert f"text differs between records, kept as the newest showed them: {MINUTES}" in captured.err
    assert "{not json" not in captured.err  # a record's content never reaches a message

    lines = lines_of(out)
    by_id = {line["id"]: line for line in lines}
    # the disagreement first, then the others oldest first; the duplicate's newer copy kept
    assert [line["id"] for line in lines] == [records[name]["id"] for name in ("disagrees", "fallback", "duplicate", "ends")]
    assert by_id[records["disagrees"]["id"]] == {
        "id": records["disagrees"]["id"], "current_task": None,
        "messages": [{"role": "user", "content": "minutes from my acme call pls",
                      "expect": {"task": MINUTES, "event": "start", "source": "teacher"}}],
    }  # fmt: skip
    fallback = by_id[records["fallback"]["id"]]
    assert fallback["current_task"] == EMAIL and [m.get("expect") for m in fallback["messages"]] == [
        None, None, {"task": EMAIL, "event": "continue", "source": "fallback"}]  # fmt: skip
    assert by_id[records["ends"]["id"]]["messages"][-1]["expect"] == {"task": None, "event": "end", "source": "teacher"}

    # the task file: every task the records allowed, the renamed one as the newest record showed it
    tasks_file = tmp_path / "harvested.tasks.json"
    tasks = {task.name: task for task in load_task_file(tasks_file, updated_at="")}
    assert sorted(tasks) == [task["name"] for task in ALLOWED]
    assert tasks[MINUTES].description.startswith("Write the minutes of a call")

    # review shows the disagreement flagged, and relabels a single-turn line from its running task
    store = ReviewStore(out, list(tasks))
    assert store.state()["flagged"] == [records["disagrees"]["id"]]
    relabelled = store.set_label(records["ends"]["id"], 0, PITCH)
    assert relabelled["messages"][0]["expect"] == {"task": PITCH, "event": "continue", "source": "reviewed"}

    # eval routes the harvested turns over the harvested tasks (the fallback alone: an OpenAI double
    # answering each turn's label)
    labels = {turn.messages[-1]["content"]: turn.expected.task for turn in turns_of(load_dataset(out))}
    openai = OpenAIDouble()
    openai.always(lambda received: openai.answer(labels[last_message(received)]))
    for name, value in {"OPENAI_BASE_URL": openai.base_url, "OPENAI_API_KEY": "sk-eval", "NO_PROXY": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("TASKROUTER_SAGEMAKER_ENDPOINT", "TASKROUTER_TABLE_NAME", "TASKROUTER_OPENAI_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    try:
        code = main(["eval", "--dataset", str(out), "--target", "local", "--tasks", str(tasks_file),
                     "--out", str(tmp_path / "eval"), "--no-progress"])  # fmt: skip
    finally:
        openai.close()
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert code == 0 and len(report["turns"]) == 4
    assert report["metrics"]["task"]["accuracy"] == 1.0 and report["metrics"]["event"]["accuracy"] == 1.0


def test_since_reads_the_window_only(local_dir, tmp_path, capsys):
    now = datetime.now(timezone.utc)
    recent = record("minutes from my acme call pls", at=now - timedelta(minutes=10), decided=MINUTES, teacher=MINUTES)
    stale = record("draft the follow up email to Sam", at=now - timedelta(hours=3), decided=EMAIL, teacher=EMAIL)
    old = record("a pitch for our app", at=now - timedelta(days=3), decided=PITCH, teacher=PITCH)
    write_local(local_dir, recent)
    write_local(local_dir, stale, key=key_of(stale, hour_of=now))  # in a listed hour, older than the window
    write_local(local_dir, old)  # in an hour the window does not list: never read
    out = tmp_path / "recent.jsonl"
    assert harvest("--local", "--since", "90m", "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "2 records read" in err and "1 older than --since" in err
    assert [line["id"] for line in lines_of(out)] == [recent["id"]]
    assert harvest("--local", "--since", "7d", "--out", str(out), "--force") == 0
    assert {line["id"] for line in lines_of(out)} == {recent["id"], stale["id"], old["id"]}


def test_a_window_lists_whole_days_once_and_hours_of_the_days_it_covers_in_part():
    now = datetime(2026, 12, 3, 7, 49, tzinfo=timezone.utc)
    assert prefixes(now - timedelta(minutes=90), now) == [
        "records/date=2026-12-03/hour=06/", "records/date=2026-12-03/hour=07/"]  # fmt: skip
    assert prefixes(now - timedelta(days=2), now) == [
        *[f"records/date=2026-12-01/hour={hour:02d}/" for hour in range(7, 24)],
        "records/date=2026-12-02/",
        *[f"records/date=2026-12-03/hour={hour:02d}/" for hour in range(8)],
    ]  # fmt: skip
    assert prefixes(None, now) == ["records/"]


@pytest.fixture
def stage_bucket(monkeypatch):
    """Stage dev (us-east-1, infra/stages.toml) on moto: its capture stack's output names a bucket."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        s3 = session.client("s3")
        s3.create_bucket(Bucket="dev-capture-records")

        def deploy(outputs: dict[str, str] | None = None) -> None:
            template = {
                "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {key: {"Value": value} for key, value in
                            (outputs if outputs is not None else {"CaptureBucketName": "dev-capture-records"}).items()},
            }  # fmt: skip
            session.client("cloudformation").create_stack(StackName="dev-Capture", TemplateBody=json.dumps(template))

        def put(captured: dict) -> None:  # under the teacher function's key, its body
            s3.put_object(Bucket="dev-capture-records", Key=key_of(captured), Body=record_body(captured))

        yield deploy, put


def test_a_stage_is_harvested_from_its_capture_bucket(stage_bucket, tmp_path, capsys):
    deploy, put = stage_bucket
    deploy()
    agreed = record("draft the follow up email to Sam", at=ago(hours=2), decided=EMAIL, teacher=EMAIL)
    disagreed = record("minutes from my acme call pls", at=ago(hours=1), decided=EMAIL, teacher=MINUTES)
    put(agreed), put(disagreed), put(record("a pitch for our app", at=ago(days=3), decided=PITCH, teacher=PITCH))
    out = tmp_path / "dev.jsonl"
    assert harvest("--stage", "dev", "--since", "24h", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "2 records read from s3://dev-capture-records" in captured.err  # the 3-day-old prefix not listed
    assert [line["id"] for line in lines_of(out)] == [disagreed["id"], agreed["id"]]
    assert json.loads((tmp_path / "dev.reviewed.flags.json").read_text()) == [disagreed["id"]]


def test_a_stage_without_its_capture_stack_or_output_is_one_line(stage_bucket, tmp_path, capsys):
    deploy, _ = stage_bucket
    assert harvest("--stage", "dev", "--out", str(tmp_path / "x.jsonl")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stack dev-Capture was not found in us-east-1, from infra/stages.toml" in err
    deploy({"Other": "x"})
    assert harvest("--stage", "dev", "--out", str(tmp_path / "x.jsonl")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stack dev-Capture has no output CaptureBucketName" in err
    assert not list(tmp_path.iterdir())


def test_what_harvest_refuses_or_does_not_write(local_dir, tmp_path, capsys):
    out = tmp_path / "h.jsonl"
    assert harvest("--local", "--out", "-") == 2
    assert "give a file, not -" in capsys.readouterr().err
    assert harvest("--local", "--since", "3w", "--out", str(out)) == 2
    assert harvest("--local", "--out", str(out)) == 1  # no capture folder yet
    assert "nothing captured locally yet" in capsys.readouterr().err

    write_local(local_dir, record("a pitch for our app", at=ago(hours=1), decided=PITCH, teacher_error="capped"))
    assert harvest("--local", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "1 whose teacher failed" in err and "no turn harvested" in err and not out.exists()
    assert not (tmp_path / "h.tasks.json").exists()

    write_local(local_dir, record("minutes pls", at=ago(hours=1), decided=MINUTES, teacher=MINUTES))
    out.write_text("kept\n")
    assert harvest("--local", "--out", str(out)) == 1
    assert "exists: give --force" in capsys.readouterr().err and out.read_text() == "kept\n"
    out.unlink()
    (tmp_path / "h.tasks.json").write_text("mine\n")
    assert harvest("--local", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "h.tasks.json, which harvest writes beside --out, exists" in err and err.count("\n") == 1 and not out.exists()
    assert harvest("--local", "--out", str(out), "--force") == 0
    assert len(lines_of(out)) == 1 and (tmp_path / "h.tasks.json").read_text() != "mine\n"


def test_harvest_flags_add_to_those_a_review_kept(local_dir, tmp_path):
    out = tmp_path / "h.jsonl"
    (tmp_path / "h.reviewed.flags.json").write_text('["earlier"]\n')
    disagreed = record("minutes from my acme call pls", at=ago(hours=1), decided=None, teacher=MINUTES)
    write_local(local_dir, disagreed)
    assert harvest("--local", "--out", str(out)) == 0
    assert json.loads((tmp_path / "h.reviewed.flags.json").read_text()) == sorted(["earlier", disagreed["id"]])


def test_no_aws_credentials_is_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert harvest("--stage", "dev", "--out", str(tmp_path / "x.jsonl")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no AWS credentials to find stage 'dev' with: set AWS_PROFILE" in err


def test_a_flags_file_that_does_not_read_stops_the_run_before_anything_is_written(local_dir, tmp_path, capsys):
    (tmp_path / "h.reviewed.flags.json").write_text('{"not": "a list"}\n')
    write_local(local_dir, record("minutes from my acme call pls", at=ago(hours=1), decided=None, teacher=MINUTES))
    assert harvest("--local", "--out", str(tmp_path / "h.jsonl")) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].endswith("h.reviewed.flags.json: not a list of conversation ids")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["h.reviewed.flags.json", "local-state"]


# -- a turn keeps what it was routed with: its allow-list, its running task ------------------------
MINUTES_PLEASE = "Can you write up the minutes of this morning's call?"
WHAT_THE_USER_WANTS = {MINUTES_PLEASE: MINUTES, "thanks, that's all": None, "now email Sam the recap": EMAIL}


def eval_over_harvest(tmp_path: Path, dataset: Path, monkeypatch) -> tuple[dict, list[list[str]]]:
    """`taskrouter eval --target local --tasks <the harvest's task file>`, the fallback alone deciding: an
    OpenAI double that answers what the user wants when the request allows it, `none` otherwise (as a
    model constrained to the choices would). The report, and the choices each request offered."""
    offered: list[list[str]] = []

    def answer(received):
        choices = received.json()["response_format"]["json_schema"]["schema"]["properties"]["task"]["enum"]
        offered.append(choices)
        wanted = WHAT_THE_USER_WANTS[last_message(received)]
        return OpenAIDouble.answer(wanted if wanted in choices else None)

    openai = OpenAIDouble()
    openai.always(answer)
    for name, value in {"OPENAI_BASE_URL": openai.base_url, "OPENAI_API_KEY": "sk-eval", "NO_PROXY": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("TASKROUTER_SAGEMAKER_ENDPOINT", "TASKROUTER_TABLE_NAME", "TASKROUTER_OPENAI_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    tasks_file = dataset.with_name(f"{dataset.stem}.tasks.json")
    try:
        code = main(["eval", "--dataset", str(dataset), "--target", "local", "--tasks", str(tasks_file),
                     "--out", str(tmp_path / "eval"), "--no-progress"])  # fmt: skip
    finally:
        openai.close()
    assert code == 0
    return json.loads((tmp_path / "eval" / "report.json").read_text()), offered


def test_a_turn_routed_with_an_allow_list_is_harvested_with_it_and_eval_scores_it_right(local_dir, tmp_path, monkeypatch):
    """The turn `tasks: ["follow_up_email"]`, "Can you write up the minutes…": `none` is right (the minutes
    were not allowed). Another turn, routed over every task, puts prepare_meeting_minutes in the task
    file: without its allow-list the first turn would be replayed over it, and `none` scored wrong."""
    restricted = record(MINUTES_PLEASE, at=ago(hours=2), decided=None, teacher=None, requested_tasks=[EMAIL, "gone_task"])
    everything = record("now email Sam the recap", at=ago(hours=1), decided=EMAIL, teacher=EMAIL)
    write_local(local_dir, restricted), write_local(local_dir, everything)
    out = tmp_path / "harvested.jsonl"
    assert harvest("--local", "--out", str(out)) == 0

    by_id = {line["id"]: line for line in lines_of(out)}
    assert by_id[restricted["id"]]["messages"] == [{
        "role": "user", "content": MINUTES_PLEASE, "tasks": [EMAIL],  # the names the router kept of the allow-list
        "expect": {"task": None, "event": "none", "source": "teacher"},
    }]  # fmt: skip
    assert "tasks" not in by_id[everything["id"]]["messages"][-1]  # no allow-list: every task
    assert MINUTES in {task.name for task in load_task_file(tmp_path / "harvested.tasks.json", updated_at="")}

    report, offered = eval_over_harvest(tmp_path, out, monkeypatch)
    assert report["metrics"]["task"]["accuracy"] == 1.0 and report["metrics"]["event"]["accuracy"] == 1.0
    assert sorted(offered, key=len)[0] == [EMAIL, "none"]  # the restricted turn was routed over its allow-list


def test_a_running_task_outside_the_allow_list_is_in_the_task_file_and_eval_routes_with_it(local_dir, tmp_path, monkeypatch):
    """A pitch running, the turn allowed the follow-up email only: the pitch is no allowed task, yet the
    task file holds it, so that eval's router keeps it running (else it takes it for none: `end` becomes
    `none`, and every event is scored wrong on right task answers)."""
    ends = record("thanks, that's all", at=ago(hours=2), decided=None, teacher=None, current_task=PITCH,
                  requested_tasks=[EMAIL])  # fmt: skip
    switches = record("now email Sam the recap", at=ago(hours=1), decided=EMAIL, teacher=EMAIL, current_task=PITCH,
                      requested_tasks=[EMAIL])  # fmt: skip
    write_local(local_dir, ends), write_local(local_dir, switches)
    assert ends["running_task"]["name"] == PITCH and [task["name"] for task in ends["tasks"]] == [EMAIL]
    out = tmp_path / "harvested.jsonl"
    assert harvest("--local", "--out", str(out)) == 0

    assert [(line["current_task"], line["messages"][-1]["expect"]["event"]) for line in lines_of(out)] == [
        (PITCH, "end"), (PITCH, "switch")]  # fmt: skip
    tasks = {task.name: task for task in load_task_file(tmp_path / "harvested.tasks.json", updated_at="")}
    assert sorted(tasks) == [PITCH, EMAIL]
    assert tasks[PITCH].description == next(task["description"] for task in ALLOWED if task["name"] == PITCH)

    report, _ = eval_over_harvest(tmp_path, out, monkeypatch)
    assert report["metrics"]["event"]["accuracy"] == 1.0 and report["metrics"]["task"]["accuracy"] == 1.0


def test_a_record_of_schema_1_is_still_harvested_over_every_task(local_dir, tmp_path):
    old = record(MINUTES_PLEASE, at=ago(hours=1), decided=MINUTES, teacher=MINUTES, schema=1)
    assert "requested_tasks" not in old
    write_local(local_dir, old)
    out = tmp_path / "old.jsonl"
    assert harvest("--local", "--out", str(out)) == 0
    (line,) = lines_of(out)
    assert "tasks" not in line["messages"][-1] and line["messages"][-1]["expect"]["task"] == MINUTES


def test_records_sharing_an_id_make_one_line_and_are_counted(local_dir, tmp_path, capsys):
    """A record stored twice (a retried write, a copy under another hour): one line per id, the newest,
    and the count said; review then takes the file."""
    first = record("minutes from my acme call pls", at=ago(hours=3), decided=MINUTES, teacher=MINUTES, schema=1)
    again = {**record("draft the follow up email to Sam", at=ago(hours=1), decided=EMAIL, teacher=EMAIL), "id": first["id"]}
    other = record("a pitch for our app", at=ago(hours=2), decided=PITCH, teacher=PITCH, schema=1)
    for captured in (first, again, other):
        write_local(local_dir, captured)
    out = tmp_path / "h.jsonl"
    assert harvest("--local", "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "3 records read" in err and "1 sharing the id of a newer record" in err
    lines = lines_of(out)
    assert sorted(line["id"] for line in lines) == sorted([first["id"], other["id"]])
    kept = next(line for line in lines if line["id"] == first["id"])
    assert kept["messages"][-1]["content"] == "draft the follow up email to Sam"  # the newest of the two
    assert ReviewStore(out, [task["name"] for task in ALLOWED]).state()["conversations"]


@pytest.mark.parametrize("since", ["1000000000d", "999999999d", "700000d", "367d", "8785h", "527041m", "9" * 5000 + "d"])
def test_since_past_its_bound_is_a_usage_error_in_one_line(local_dir, tmp_path, capsys, since):
    assert harvest("--local", "--since", since, "--out", str(tmp_path / "h.jsonl")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and len(err) < 400
    assert "--since: takes at most 366d" in err
    assert not (tmp_path / "h.jsonl").exists()


@pytest.mark.parametrize("since", ["7", "d", "-3d", "1.5h", "3w", "٣d", "0m", ""])
def test_a_malformed_since_is_a_usage_error_in_one_line(local_dir, tmp_path, capsys, since):
    assert harvest("--local", f"--since={since}", "--out", str(tmp_path / "h.jsonl")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "takes a duration above 0" in err


def test_the_bound_of_since_is_in_its_help_and_a_year_is_read(local_dir, tmp_path, capsys):
    assert harvest("--help") == 0
    assert "at most 366d" in " ".join(capsys.readouterr().out.split())
    write_local(local_dir, record("minutes from my acme call pls", at=ago(days=300), decided=MINUTES, teacher=MINUTES))
    assert harvest("--local", "--since", "366d", "--out", str(tmp_path / "h.jsonl")) == 0
    assert len(lines_of(tmp_path / "h.jsonl")) == 1
