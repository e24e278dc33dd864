"""The data flywheel end to end on `make local`: the SageMaker double as the primary, the OpenAI double
as fallback and teacher, each answering within the choices it is offered, as a constrained model does; a
mix of primary and fallback turns with one teacher disagreement and one turn routed with an allow-list is
captured, labelled, harvested, and the harvested dataset evaluated."""

from __future__ import annotations

import json
import time
from pathlib import Path

from taskrouter.cli import main

from .local_mode import LocalServer
from .servers import OpenAIDouble, Received, SageMakerRuntimeDouble

# The user's words -> (the primary's answer, the teacher's answer); None: the primary fails.
TURNS = {
    "Write up the minutes of my call with Acme": ("prepare_meeting_minutes", "prepare_meeting_minutes"),
    "Draft a one minute pitch for Acme": ("prepare_linkedin_post", "create_one_minute_pitch"),  # disagreement
    "Send Dana the follow-up about pricing": (None, "follow_up_email"),  # the fallback decides
    "What's the weather like in Lyon?": ("none", "none"),
    # routed with an allow-list that leaves the minutes out: both answer none, the minutes not offered
    "Can you write up the minutes of this morning's call?": ("prepare_meeting_minutes", "prepare_meeting_minutes"),
}
ALLOW_LISTS = {"Can you write up the minutes of this morning's call?": ["follow_up_email"]}
FALLBACK_ANSWER = "follow_up_email"


def _within(answer: str, choices: list[str]) -> str:
    return answer if answer in choices else "none"


def _last_user_text(messages: list[dict]) -> str:
    context = messages[-1]["content"]  # the fenced conversation: find which of TURNS it holds
    return next(said for said in TURNS if said.replace("'", "&#x27;") in context or said in context)


def _primary(received: Received):
    body = received.json()
    primary, _ = TURNS[_last_user_text(body["messages"])]
    if primary is None:
        return SageMakerRuntimeDouble.model_error()
    return SageMakerRuntimeDouble.answer(_within(primary, body["structured_outputs"]["choice"]))


def _openai(received: Received):
    body = received.json()
    schema = body["response_format"]["json_schema"]["schema"]
    said = _last_user_text(body["messages"])
    if "reasoning" in schema["properties"]:  # the teacher asks with few_shot_cot; the fallback zero-shot
        task = _within(TURNS[said][1], schema["properties"]["task"]["enum"])
        return OpenAIDouble.completion(json.dumps({"reasoning": "the last message says so", "task": task}))
    return OpenAIDouble.answer(FALLBACK_ANSWER)


def _records(state: Path, count: int) -> list[dict]:
    folder = state / "capture" / "records"
    deadline = time.monotonic() + 60
    while len(found := sorted(folder.rglob("*.json"))) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return [json.loads(path.read_text()) for path in found]


def test_turns_are_captured_labelled_harvested_and_evaluated(tmp_path, monkeypatch, capsys):
    state = tmp_path / "state"
    openai, sagemaker = OpenAIDouble(), SageMakerRuntimeDouble()
    openai.always(_openai)
    sagemaker.always(_primary)
    server = LocalServer(
        state, openai, TASKROUTER_SAGEMAKER_ENDPOINT="local-endpoint", AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=sagemaker.url,
        TASKROUTER_PRIMARY_TIMEOUT_MS="5000", TASKROUTER_HEDGE_AFTER_MS="off",
        TASKROUTER_CAPTURE_SHARE="1", TASKROUTER_CAPTURE_FALLBACK_SHARE="1",
    )  # fmt: skip
    try:
        backends = []
        for said in TURNS:
            allow_list = {"tasks": ALLOW_LISTS[said]} if said in ALLOW_LISTS else {}
            status, body = server.request("POST", "/route", {"conversation": [{"role": "user", "content": said}], **allow_list})
            assert status == 200, body
            backends.append(body["backend"])
        assert backends.count("sagemaker") == 4 and backends.count("openai") == 1

        records = _records(state, len(TURNS))
        assert len(records) == len(TURNS)
        labelled = [r for r in records if r["teacher"] is not None]
        assert len(labelled) == 4 and all(r["decision"]["backend"] == "sagemaker" for r in labelled)
        assert [r["decision"]["backend"] for r in records if r["teacher"] is None] == ["openai"]
        assert sum(r["teacher"]["agrees"] is False for r in labelled) == 1
        assert all(r["sampling"]["probability"] == 1 for r in records)

        monkeypatch.setenv("TASKROUTER_LOCAL_DIR", str(state))
        harvested = tmp_path / "harvest.jsonl"
        assert main(["data", "harvest", "--local", "--out", str(harvested)]) == 0, capsys.readouterr().err
        lines = [json.loads(line) for line in harvested.read_text().splitlines()]
        assert len(lines) == len(TURNS)
        first = lines[0]["messages"][-1]["expect"]  # the disagreement first, labelled by the teacher
        assert (first["task"], first["source"]) == ("create_one_minute_pitch", "teacher")
        assert sorted(line["messages"][-1]["expect"]["source"] for line in lines) == ["fallback", *["teacher"] * 4]
        allowed = [line["messages"][-1] for line in lines if "tasks" in line["messages"][-1]]
        assert [(m["tasks"], m["expect"]["task"]) for m in allowed] == [(["follow_up_email"], None)]
        assert (tmp_path / "harvest.tasks.json").exists()
        flagged = json.loads((tmp_path / "harvest.reviewed.flags.json").read_text())
        assert flagged == [lines[0]["id"]]

        out = tmp_path / "eval"
        code = main(["eval", "--dataset", str(harvested), "--target", server.url, "--out", str(out), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        assert len(report["turns"]) == len(TURNS) and report["metrics"]["error_rate"] == 0
        # the primary still answers the pitch as a LinkedIn post: the one turn the teacher would change; the
        # turn of the allow-list is routed with it again (else the primary would answer the minutes)
        assert report["metrics"]["task"]["accuracy"] == 0.8
    finally:
        server.stop()
        openai.close()
        sagemaker.close()
