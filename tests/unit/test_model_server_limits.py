"""The model server's limits on the tiny random Llama (no hub), over real HTTP: a request nobody waits
for stops within one token step and frees the model; a deadline ends a long decode with SageMaker's
answer for an invocation that timed out; a request beyond the line is refused at once, as the stage's
container refuses it, and the router reads that as `throttled`; the prefix cache holds its prefixes
in exactly their room and within its memory bound.

No timed assertion: the decode is held at a known forward pass (harness.Gate) while the test acts.

Sources of the answers (model_server/protocol.py has them in full): a full queue is djl-serving's
503 (branch 0.36.0-lmi18-dlc, `wlm/src/main/java/ai/djl/serving/wlm/WorkLoadManager.java:113-123`,
`serving/src/main/java/ai/djl/serving/http/InferenceRequestHandler.java:504-512`,
`serving/src/main/java/ai/djl/serving/util/ConfigManager.java:496-497`), a ModelError with
OriginalStatusCode 503 through SageMaker; an invocation past its time is SageMaker's 424 ModelError
"Received server error (0) from primary with message "Your invocation timed out while waiting for a
response from container primary. ..."" (LMI's async mode sets no limit of its own:
`engines/python/src/main/java/ai/djl/python/engine/PyProcess.java:168-169`)."""

from __future__ import annotations

import json
import threading

import pytest

torch = pytest.importorskip("torch")  # the local-model extra; `make test` installs it
pytest.importorskip("xgrammar")

from botocore.exceptions import ClientError  # noqa: E402

from taskrouter.adapters.sagemaker_backend import SageMakerBackend  # noqa: E402
from taskrouter.core.backends import BackendThrottled  # noqa: E402
from taskrouter.core.prompting import build_prompt  # noqa: E402
from taskrouter.core.request import Message, Strategy  # noqa: E402
from taskrouter.core.tasks import Task  # noqa: E402
from taskrouter.model_server.kv_cache import PrefixCache, new_cache  # noqa: E402
from taskrouter.model_server.limits import Limits  # noqa: E402
from tests.integration.servers import SageMakerRuntimeDouble  # noqa: E402

from .model_server_harness import ENDPOINT, INVOCATIONS, NEVER_ENDING, Gate, chat, serving, tiny_model  # noqa: E402

LONG = Limits(deadline_s=600)  # no deadline within a test: only the client's leaving stops a decode


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def _open_never_ending(served) -> object:
    """A request with no cap and a grammar that never completes, its connection kept by the test."""
    connection = served.connection()
    connection.request("POST", INVOCATIONS, json.dumps(chat(structured_outputs=NEVER_ENDING)),
                       {"Content-Type": "application/json"})
    return connection


def test_an_abandoned_decode_stops_within_one_token_step_and_the_next_request_is_served(loaded) -> None:
    with serving(loaded, LONG) as served:
        gate = Gate(loaded.model, at=3)  # the prompt's pass, then two tokens; held before the third returns
        try:
            abandoned = _open_never_ending(served)
            assert gate.reached.wait(120)
            abandoned.close()  # the client leaves while its decode is under way
            gate.release()

            status, answer = served.post(chat(max_tokens=2))  # waits its turn behind the abandoned one
        finally:
            gate.remove()

    assert status == 200 and answer["choices"][0]["finish_reason"] in ("length", "stop")
    # The abandoned request made no pass after the one under way when its client left (the check
    # comes between tokens); the next request made its own two (the prompt, then one token).
    assert gate.passes == 3 + 2


def test_a_client_that_leaves_while_waiting_its_turn_costs_no_decoding(loaded) -> None:
    with serving(loaded, LONG) as served:
        gate = Gate(loaded.model, at=2)
        try:
            first = _open_never_ending(served)
            assert gate.reached.wait(120)
            waiting = _open_never_ending(served)
            _wait_for(lambda: served.engine.turns.waiting == 1)
            waiting.close()
            _wait_for(lambda: served.engine.turns.waiting == 0)  # it left the line
            first.close()
            gate.release()
            status, _ = served.post(chat(max_tokens=1))
        finally:
            gate.remove()

    assert status == 200 and gate.passes == 2 + 1  # the first request's two passes, the last one's one


def test_the_deadline_ends_a_long_decode_as_sagemaker_ends_an_invocation_that_timed_out(loaded) -> None:
    with serving(loaded, Limits(deadline_s=0.2)) as served:
        gate = Gate(loaded.model, at=2)
        answered = threading.Event()

        def hold() -> None:  # the decode held at its second pass until its deadline has passed
            while not answered.is_set():
                if gate.reached.wait(0.05):
                    answered.wait(0.5)
                    gate.release()
                    return

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            with pytest.raises(ClientError) as caught:
                served.runtime().invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/json",
                                                 Body=json.dumps(chat(structured_outputs=NEVER_ENDING)))
        finally:
            answered.set()
            holder.join()
            gate.remove()

    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424 and error["Error"]["Code"] == "ModelError"
    assert error["OriginalStatusCode"] == 0
    assert error["OriginalMessage"].startswith("Your invocation timed out while waiting for a response from container")
    assert gate.passes <= 2  # stopped at the check after the held pass, not at the end of the context


def test_a_request_beyond_the_queue_is_refused_at_once_as_lmi_refuses_and_the_router_reads_throttled(loaded) -> None:
    with serving(loaded, Limits(deadline_s=600, queue=1)) as served:
        gate = Gate(loaded.model, at=2)
        try:
            decoding = _open_never_ending(served)
            assert gate.reached.wait(120)
            waiting = served.connection()
            waiting.request("POST", INVOCATIONS, json.dumps(chat(max_tokens=1)), {"Content-Type": "application/json"})
            _wait_for(lambda: served.engine.turns.waiting == 1)

            # Answered while the decode is still held: nothing waited for the model.
            with pytest.raises(ClientError) as caught:
                served.runtime().invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/json",
                                                 Body=json.dumps(chat(max_tokens=1)))
            backend = SageMakerBackend({10.0: served.runtime()}, ENDPOINT, None)
            prompt = build_prompt(Strategy.ZERO_SHOT, [Message(role="user", content="minutes please")], _TASKS, None)
            with pytest.raises(BackendThrottled) as throttled:
                backend.decide(prompt, 10.0)
            assert gate.passes == 2  # the decode still held: both answers came without waiting for the model

            decoding.close()
            gate.release()
            assert waiting.getresponse().status == 200  # the waiting one is served once the model is free
            waiting.close()
        finally:
            gate.remove()

    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424 and error["Error"]["Code"] == "ModelError"
    assert error["OriginalStatusCode"] == 503
    container = json.loads(error["OriginalMessage"])
    assert container["code"] == 503 and container["type"] == "WlmCapacityException"
    assert throttled.value.reason == "throttled"
    assert json.loads(json.loads(SageMakerRuntimeDouble.busy().body)["OriginalMessage"]) == container


_TASKS = {"prepare_meeting_minutes": Task("prepare_meeting_minutes", "Write the minutes.", (), 1, "")}


@pytest.mark.parametrize(("reply", "reason"), [
    (SageMakerRuntimeDouble.busy(), "throttled"),  # the container's full queue: the endpoint's capacity
    (SageMakerRuntimeDouble.model_error(500), "error"),  # the model failed
])  # fmt: skip
def test_the_router_reads_a_containers_full_queue_as_throttled_as_on_the_stage(reply, reason: str) -> None:
    import boto3
    from botocore.config import Config

    from taskrouter.core.backends import BackendFailure

    double = SageMakerRuntimeDouble()
    try:
        double.script(reply)
        client = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                       region_name="us-east-1").client(
            "sagemaker-runtime", endpoint_url=double.url, config=Config(retries={"total_max_attempts": 1}))
        prompt = build_prompt(Strategy.ZERO_SHOT, [Message(role="user", content="minutes please")], _TASKS, None)
        with pytest.raises(BackendFailure) as failed:
            SageMakerBackend({10.0: client}, ENDPOINT, None).decide(prompt, 10.0)
    finally:
        double.close()

    assert failed.value.reason == reason


def test_a_cached_prefix_holds_exactly_its_tokens(loaded) -> None:
    ids = loaded.tokenizer("Write up the minutes of my call with Acme " * 40, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        cache = loaded.model(input_ids=torch.tensor([ids]), past_key_values=new_cache(loaded.base_config, exact=True),
                             use_cache=True).past_key_values

    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):
            assert tensor.shape[-2] == len(ids)
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()  # no spare room


def test_the_prefix_cache_stays_within_its_bytes_evicting_the_least_recently_used(loaded) -> None:
    def prefix(words: int):
        ids = loaded.tokenizer("minutes " * words, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = loaded.model(input_ids=torch.tensor([ids]), past_key_values=new_cache(loaded.base_config, exact=True),
                               use_cache=True)
        return tuple(ids), out.past_key_values

    small = prefix(100)
    one = PrefixCache(max_bytes=1 << 40).put("probe", *small).bytes
    cache = PrefixCache(max_bytes=2 * one + one // 2)  # room for two such prefixes, not three
    for key in ("a", "b"):
        cache.put(key, *small)
    cache.get("a")  # "a" used last: "b" is the least recently used
    cache.put("c", *small)

    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.held_bytes <= cache.max_bytes
    cache.put("huge", *prefix(400))  # alone over the bound: served, never kept
    assert cache.get("huge") is None and len(cache) == 2


def test_the_engine_serves_within_the_prefix_caches_bound(loaded) -> None:
    with serving(loaded, Limits(deadline_s=600, prefix_cache_bytes=1)) as served:  # no prefix fits
        system = {"role": "system", "content": "Route the request. " * 20}
        status, answer = served.post({**chat(max_tokens=2), "messages": [system, {"role": "user", "content": "hi"}]})
        held = served.engine.prefixes.held_bytes

    assert status == 200 and answer["usage"]["completion_tokens"] <= 2 and held == 0


def _wait_for(condition, timeout_s: float = 60) -> None:
    """Until `condition()` (a state the server reaches on its own), polled; fails after `timeout_s`."""
    done = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("the server never reached the state waited for")
