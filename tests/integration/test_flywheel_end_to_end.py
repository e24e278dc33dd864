"""The data flywheel end to end on `make local`: the SageMaker double as the primary, the OpenAI double
as fallback and teacher; a mix of primary and fallback turns with one teacher disagreement is captured,
labelled, harvested, and the harvested dataset evaluated."""

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
}
FALLBACK_ANSWER = "follow_up_email"


def _last_user_text(messages: list[dict]) -> str:
    context = messages[-1]["content"]  # the fenced conversation: find which of TURNS it holds
    return next(said for said in TURNS if said.replace("'", "&#x27;") in context or said in context)


def _primary(received: Received):
    primary, _ = TURNS[_last_user_text(received.json()["messages"])]
    if primary is None:
        return SageMakerRuntimeDouble.model_error()
    return SageMakerRuntimeDouble.answer(primary)


def _openai(received: Received):
    body = received.json()
    schema = body["response_format"]["json_schema"]["schema"]
    said = _last_user_text(body["messages"])
    if "reasoning" in schema["properties"]:  # the teacher asks with few_shot_cot; the fallback zero-shot
        return OpenAIDouble.completion(json.dumps({"reasoning": "the last message says so", "task": TURNS[said][1]}))
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
            status, body = server.request("POST", "/route", {"conversation": [{"role": "user", "content": said}]})
            assert status == 200, body
            backends.append(body["backend"])
        assert backends.count("sagemaker") == 3 and backends.count("openai") == 1

        records = _records(state, len(TURNS))
        assert len(records) == len(TURNS)
        labelled = [r for r in records if r["teacher"] is not None]
        assert len(labelled) == 3 and all(r["decision"]["backend"] == "sagemaker" for r in labelled)
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
        assert sorted(line["messages"][-1]["expect"]["source"] for line in lines) == ["fallback", "teacher", "teacher", "teacher"]
        assert (tmp_path / "harvest.tasks.json").exists()
        flagged = json.loads((tmp_path / "harvest.reviewed.flags.json").read_text())
        assert flagged == [lines[0]["id"]]

        out = tmp_path / "eval"
        code = main(["eval", "--dataset", str(harvested), "--target", server.url, "--out", str(out), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        assert len(report["turns"]) == len(TURNS) and report["metrics"]["error_rate"] == 0
        # the primary still answers the pitch as a LinkedIn post: the one turn the teacher would change
        assert report["metrics"]["task"]["accuracy"] == 0.75
    finally:
        server.stop()
        openai.close()
        sagemaker.close()
