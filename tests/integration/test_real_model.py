"""The real primary on this machine: `make local` with TASKROUTER_LOCAL_MODEL serving SmolLM2-135M-Instruct
(the GGUF that set-up installs from PyPI) and an adapter `taskrouter adapter train` makes from it.

One model server for the module (make local's), on a two-task list with short prompts: every strategy is
decided by the real model end to end, its answer one of the allowed ones by construction (xgrammar) and
parsed by the router; the trained adapter is served by its component name and picked by the router's
TASKROUTER_SAGEMAKER_COMPONENT; the trainer's token ids for a turn are the ids the server fed the model
for it; what the double of the endpoint refuses, the real server refuses the same way; a slice of the
routing benchmark is answered as its committed run recorded; and the registry's catalogue budget is
the served model's, in its tokens."""

from __future__ import annotations

import json
import math
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from taskrouter.cli import main
from taskrouter.core.prompting import TEMPLATE_TOKENS, RoutingPrompt, build_prompt, transcript_bound
from taskrouter.core.request import MAX_CONTENT_CHARS, MAX_MESSAGES, Message, Strategy
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.tasks import Task, tasks_sha256
from taskrouter.evaluation.dataset import load_dataset, turns_of
from taskrouter.model_server.bundled import smollm2_gguf
from taskrouter.model_server.engine import Engine
from taskrouter.model_server.loading import pretrained_source

from .local_mode import LocalServer
from .servers import OpenAIDouble, SageMakerRuntimeDouble
from .test_doubles import CHAT, REFUSED

ADAPTER = "router-test"  # the trained adapter's inference component name
ENDPOINT = "taskrouter-local"
TASKS = {
    "tasks": [
        {"name": "follow_up_email", "description": "Write a follow-up e-mail to a client.",
         "examples": ["Send Dana a follow-up e-mail"]},
        {"name": "prepare_meeting_minutes", "description": "Write the minutes of a meeting.",
         "examples": ["Write up the minutes of my call"]},
    ]
}  # fmt: skip


def _user(content: str, task: str | None, event: str) -> dict[str, Any]:
    return {"role": "user", "content": content, "expect": {"task": task, "event": event}}


MINUTES, EMAIL = "prepare_meeting_minutes", "follow_up_email"
CONVERSATIONS = [  # a few labelled turns: training needs two steps' worth, the ids test one turn
    {"id": "minutes", "messages": [_user("minutes of my acme call please", MINUTES, "start")]},
    {"id": "email", "messages": [_user("email Dana a follow-up", EMAIL, "start")]},
    {"id": "switch", "messages": [
        _user("minutes of the globex call", MINUTES, "start"), {"role": "assistant", "content": "Here they are."},
        _user("now a follow-up e-mail to them", EMAIL, "switch")]},
    {"id": "thanks", "messages": [_user("thanks, that is all", None, "none")]},
]  # fmt: skip
START_TIMEOUT_S = 600  # the model loads and de-quantizes in seconds alone, minutes on a busy machine
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("real-model")
    (folder / "tasks.json").write_text(json.dumps(TASKS))
    (folder / "dataset.jsonl").write_text("".join(json.dumps(line) + "\n" for line in CONVERSATIONS))
    return {"tasks": folder / "tasks.json", "dataset": folder / "dataset.jsonl", "adapter": folder / "adapter",
            "state": folder / "state"}


@pytest.fixture(scope="module")
def adapter(files: dict[str, Path]) -> Path:
    """An adapter `taskrouter adapter train` makes on the GGUF: batch 1, two steps."""
    status = main(["adapter", "train", "--dataset", str(files["dataset"]), "--tasks", str(files["tasks"]),
                   "--base-model", str(smollm2_gguf()), "--out", str(files["adapter"]), "--max-steps", "2",
                   "--batch-size", "1", "--rank", "4", "--no-archive"])  # fmt: skip
    assert status == 0
    return files["adapter"]


@pytest.fixture(scope="module")
def local(files: dict[str, Path], adapter: Path) -> Iterator[LocalServer]:
    """make local with the real model and the adapter, its registry the two tasks."""
    server = LocalServer(
        files["state"], start_timeout_s=START_TIMEOUT_S,
        TASKROUTER_LOCAL_MODEL=str(smollm2_gguf()), TASKROUTER_LOCAL_ADAPTERS=f"{ADAPTER}={adapter}",
        TASKROUTER_MODEL_DEBUG="1", TASKROUTER_REGISTRY_TTL_S="0", TASKROUTER_LOCAL_CONTAINERS="1",
        TASKROUTER_CAPTURE_SHARE="0",
    )  # fmt: skip
    try:
        assert main(["--base-url", server.url, "tasks", "import", str(files["tasks"]), "--prune"]) == 0
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def model_url(local: LocalServer) -> str:
    """Where make local's model server listens: the banner's primary line names it."""
    line = next(line for line in local.banner.splitlines() if line.strip().startswith("primary:"))
    return line.split(" at ")[1].split()[0]


def _invocations(model_url: str) -> list[dict[str, Any]]:
    with _NO_PROXY.open(f"{model_url}/debug/invocations", timeout=10) as response:
        return json.loads(response.read())["invocations"]


def _runtime(model_url: str) -> Any:
    session = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1")
    config = Config(read_timeout=60, retries={"total_max_attempts": 1})
    return session.client("sagemaker-runtime", endpoint_url=model_url, config=config)


def test_the_banner_shows_the_model_adapters_and_timeouts(local: LocalServer) -> None:
    banner = local.banner
    assert "primary:  SageMaker endpoint taskrouter-local at http://127.0.0.1:" in banner
    assert f"model:    {smollm2_gguf()} on this CPU (TASKROUTER_LOCAL_MODEL)" in banner
    assert f"adapters {ADAPTER}," in banner and "no hedging" in banner
    assert "primary 10000 ms (TASKROUTER_PRIMARY_TIMEOUT_MS)" in banner and "few_shot_cot 10000/" in banner


@pytest.mark.parametrize("strategy", [strategy.value for strategy in Strategy])
def test_each_strategy_is_decided_by_the_real_model(local: LocalServer, model_url: str, files, strategy: str) -> None:
    conversation = [{"role": "user", "content": "Please write the minutes of this morning's meeting."}]

    status, answer = local.request("POST", "/route", {"conversation": conversation, "strategy": strategy}, timeout_s=60)

    assert status == 200, answer
    assert answer["backend"] == "sagemaker" and answer["fallback_reason"] is None, answer
    tasks = {task.name: task for task in load_task_file(files["tasks"], updated_at="")}
    assert answer["task"] in (*tasks, None)
    served = _invocations(model_url)[-1]  # the router's request as the model saw it, and its raw answer
    prompt = build_prompt(Strategy(strategy), [Message(**m) for m in conversation], tasks, None)
    assert served["messages"] == prompt.messages() and served["component"] is None
    assert served["finish_reason"] == "stop" and prompt.parse(served["text"]) == answer["task"]


CONFIDENCE_TURNS = ["minutes of my acme call please", "thanks, that is all"]


def test_route_answers_the_confidence_the_server_reports_and_a_threshold_escalates_the_doubtful_turn(
    local: LocalServer, model_url: str, files, tmp_path: Path
) -> None:
    """make local with SmolLM2: `confidence` is exp of the sum of the logprobs the model server reports
    for the answer (zero-shot: every generated token, the stop token's included), asked again here as
    the router asks; then a router with a threshold between the two turns' confidences (a second make
    local, on the same model server, with a fallback) keeps the surer turn and escalates the other."""
    tasks = {task.name: task for task in load_task_file(files["tasks"], updated_at="")}
    confidences = []
    for content in CONFIDENCE_TURNS:
        conversation = [{"role": "user", "content": content}]
        status, answer = local.request("POST", "/route", {"conversation": conversation}, timeout_s=60)
        assert status == 200 and answer["backend"] == "sagemaker" and answer["fallback_reason"] is None, answer
        prompt = build_prompt(Strategy.ZERO_SHOT, [Message(**m) for m in conversation], tasks, None)
        body = {"messages": prompt.messages(), "max_completion_tokens": prompt.max_answer_tokens, "temperature": 0.0,
                "repetition_penalty": 1.0, "structured_outputs": prompt.output_constraint(), "logprobs": True}
        reported = json.loads(_runtime(model_url).invoke_endpoint(
            EndpointName=ENDPOINT, ContentType="application/json", Body=json.dumps(body))["Body"].read())["choices"][0]
        assert reported["message"]["content"] == (answer["task"] or "none")
        content_logprobs = reported["logprobs"]["content"]
        assert content_logprobs[-1]["token"] == "<|im_end|>"  # the stop token is listed, as vLLM lists it
        assert answer["confidence"] == pytest.approx(math.exp(sum(t["logprob"] for t in content_logprobs)), rel=1e-6)
        assert 0 < answer["confidence"] <= 1
        confidences.append(answer["confidence"])
    assert confidences[0] != confidences[1], confidences
    threshold = sum(confidences) / 2
    entry = {"strategy": "zero_shot", "adapter": "base", "threshold": threshold, "tasks_sha256": tasks_sha256(tasks.values())}
    fallback = OpenAIDouble()
    fallback.always(OpenAIDouble.answer(MINUTES))
    escalating = LocalServer(
        tmp_path / "escalating", fallback, TASKROUTER_SAGEMAKER_ENDPOINT=ENDPOINT, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=model_url,
        AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", TASKROUTER_PRIMARY_TIMEOUT_MS="10000",
        TASKROUTER_HEDGE_AFTER_MS="off", TASKROUTER_REGISTRY_TTL_S="0", TASKROUTER_LOCAL_CONTAINERS="1",
        TASKROUTER_CAPTURE_SHARE="0", TASKROUTER_CONFIDENCE_THRESHOLDS=json.dumps([entry]),
    )  # fmt: skip
    try:
        assert ("escalate: the fallback decides answers of adapter base (TASKROUTER_ADAPTER_NAME) with confidence "
                "zero_shot under") in escalating.banner
        assert main(["--base-url", escalating.url, "tasks", "import", str(files["tasks"]), "--prune"]) == 0
        answers = [escalating.request("POST", "/route", {"conversation": [{"role": "user", "content": content}]},
                                      timeout_s=60)[1] for content in CONFIDENCE_TURNS]
    finally:
        escalating.stop()
        fallback.close()
    surer, doubtful = sorted(range(2), key=lambda i: -confidences[i])
    assert (answers[surer]["backend"], answers[surer]["fallback_reason"]) == ("sagemaker", None)
    assert answers[surer]["confidence"] == pytest.approx(confidences[surer], rel=1e-6)
    assert (answers[doubtful]["backend"], answers[doubtful]["fallback_reason"], answers[doubtful]["task"]) == (
        "openai", "low_confidence", MINUTES)
    assert answers[doubtful]["confidence"] == pytest.approx(confidences[doubtful], rel=1e-6)  # the primary's, kept


def test_the_trained_adapter_is_served_by_name_and_picked_by_the_router(
    local: LocalServer, model_url: str, files, adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskrouter.evaluation.targets import LocalTarget

    for name, value in {"TASKROUTER_SAGEMAKER_ENDPOINT": ENDPOINT, "TASKROUTER_SAGEMAKER_COMPONENT": ADAPTER,
                        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": model_url, "AWS_ACCESS_KEY_ID": "local",
                        "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
                        "TASKROUTER_PRIMARY_TIMEOUT_MS": "10000"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TASKROUTER_HEDGE_AFTER_MS"):
        monkeypatch.delenv(name, raising=False)
    turn = turns_of(load_dataset(files["dataset"]))[0]

    outcome = LocalTarget(files["tasks"], turn_timeout_s=60).route(turn, "zero_shot")

    assert outcome.status == 200 and outcome.backend == "sagemaker" and outcome.fallback_reason is None, outcome
    served = _invocations(model_url)[-1]
    assert served["component"] == ADAPTER and served["model"] == ADAPTER
    assert json.loads((adapter / "manifest.json").read_text())["result"]["steps"] == 2


def test_the_trainer_feeds_the_model_the_ids_the_server_feeds_it(local: LocalServer, model_url: str, files) -> None:
    from transformers import AutoTokenizer

    from taskrouter.training.train import examples_of, _encode

    turn = turns_of(load_dataset(files["dataset"]))[3]  # the switch: a running task, three messages
    body = {"conversation": list(turn.messages), "current_task": turn.current_task, "strategy": "zero_shot"}
    status, answer = local.request("POST", "/route", body, timeout_s=60)
    assert status == 200 and answer["backend"] == "sagemaker", answer
    served = _invocations(model_url)[-1]

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    tasks = {task.name: task for task in load_task_file(files["tasks"], updated_at="")}
    (example,) = examples_of([turn], tasks)
    ids, labels = _encode(tokenizer, example, max_length=32768)
    prompt_length = next(i for i, label in enumerate(labels) if label != -100)  # the answer's first token
    assert served["prompt_token_ids"] == ids[:prompt_length]
    assert 0 < served["cached_tokens"] < prompt_length  # the system message came from the prefix cache


@pytest.mark.parametrize("case", [*REFUSED, "unhosted_component"])
def test_the_real_server_refuses_what_the_double_refuses(model_url: str, case: str) -> None:
    body, extra = REFUSED.get(case, (CHAT, {"InferenceComponentName": "not-hosted"}))
    double = SageMakerRuntimeDouble()
    try:
        errors = []
        for url in (model_url, double.url):
            content_type = extra.get("content_type", "application/json")
            headers = {name: value for name, value in extra.items() if name != "content_type"}
            with pytest.raises(ClientError) as caught:
                _runtime(url).invoke_endpoint(EndpointName=ENDPOINT, ContentType=content_type,
                                              Body=json.dumps(body).encode(), **headers)
            response = caught.value.response
            errors.append((response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]))
    finally:
        double.close()
    assert errors[0] == errors[1], errors


def test_the_real_answer_has_the_doubles_shape(model_url: str) -> None:
    response = _runtime(model_url).invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="application/json", Body=json.dumps(CHAT)
    )
    real = json.loads(response["Body"].read())
    double = json.loads(SageMakerRuntimeDouble.answer("none").body)

    assert response["ContentType"] == "application/json" and response["InvokedProductionVariant"] == "AllTraffic"
    assert real.keys() == double.keys() and real["choices"][0].keys() == double["choices"][0].keys()
    assert real["choices"][0]["message"].keys() == double["choices"][0]["message"].keys()
    assert real["model"] == "lmi" and real["choices"][0]["message"]["content"] in CHAT["structured_outputs"]["choice"]


# A turn of each registry of the routing benchmark (docs/benchmark.md; realty held out), short ones (the
# workplace one allow-listed to 16 of its 40 tasks): the events start, switch and end, answered right
# and wrong by the base model.
BENCHMARK_SLICE = [("realty-de-004", 0), ("sales-de-010", 4), ("support-de-009", 0), ("workplace-it-008", 4)]
RECORDED_RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "bench" / "base-zero_shot" / "test"


def test_a_slice_of_the_benchmark_is_decided_as_the_committed_run_recorded(
    local: LocalServer, model_url: str, files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base model's greedy answers to five benchmark turns, through the router (zero-shot, the
    benchmark's task file, each turn's allow-list, the transcript SmolLM2's context gets), are the ones
    the committed zero-shot run recorded for the same turns. A registry's first prompt is prefilled
    whole, seconds on a busy CPU, which could pass the primary's 10 s timeout: a turn the primary did not
    decide is asked again, its prompt's prefix cached by then, as the recorded run's earlier turns had."""
    from benchmarks import bench_data, routing_bench

    conversations = {c["id"]: c for c in bench_data.read_jsonl(bench_data.BENCH / "test.jsonl")}
    lines = []
    for conversation_id, index in BENCHMARK_SLICE:
        conversation = conversations[conversation_id]
        before = [m for _, m in bench_data.user_turns(conversation["messages"][:index])]
        lines.append(routing_bench.single_turn(conversation, index, before[-1]["expect"]["task"] if before else None))
    dataset = tmp_path / "slice.jsonl"
    for name, value in {"TASKROUTER_LOCAL_MODEL": str(smollm2_gguf()), "TASKROUTER_SAGEMAKER_ENDPOINT": ENDPOINT,
                        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": model_url, "AWS_ACCESS_KEY_ID": "local",
                        "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
                        "TASKROUTER_PRIMARY_TIMEOUT_MS": "10000", "TASKROUTER_HEDGE_AFTER_MS": "off",
                        "TASKROUTER_LOCAL_DIR": str(files["state"]),  # make local's: the model's facts read already
                        "TASKROUTER_SERVING_MAX_TOKENS": "", "TASKROUTER_SERVING_TOKENIZER": "",
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)  # the serving and hub ones: set by the command, restored after
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TASKROUTER_SAGEMAKER_COMPONENT", "TASKROUTER_TABLE_NAME"):
        monkeypatch.delenv(name, raising=False)

    def decided(lines: list[dict[str, Any]], out: Path) -> dict[str, dict[str, Any]]:
        bench_data.write_jsonl(dataset, lines)
        assert main(["eval", "--dataset", str(dataset), "--target", "local", "--tasks",
                     str(bench_data.BENCH / "tasks.json"), "--out", str(out), "--strategy", "zero_shot",
                     "--no-progress"]) == 0  # fmt: skip
        return {t["conversation"]: t for t in json.loads((out / "report.json").read_text())["turns"]}

    turns = decided(lines, tmp_path / "eval")
    late = [line for line in lines if turns[line["id"]]["backend"] != "sagemaker"]
    if late:
        turns |= decided(late, tmp_path / "again")
    recorded = {(t["conversation"], t["index"]): t["predicted"]
                for t in json.loads((RECORDED_RUN / "report.json").read_text())["turns"]}
    ids = [line["id"] for line in lines]
    assert [turns[i]["backend"] for i in ids] == ["sagemaker"] * len(BENCHMARK_SLICE)
    assert [turns[i]["predicted"] for i in ids] == [recorded[turn] for turn in BENCHMARK_SLICE]


# -- the catalogue budget follows the model make local serves ----------------------------------------
# SmolLM2's context is 8,192 tokens where a stage serves 32,768. Over real HTTP: the registry counts the
# catalogue in the model's tokens and refuses, in those tokens, the write that would take a prompt past
# the model's context (text that tokenizes poorly: Hangul, ~1 token a byte); every registry it accepted
# on the way prompts within the context, counted as the model server counts a prompt (its chat
# template, then its tokenizer); `tasks import` run with the same TASKROUTER_LOCAL_MODEL checks a file in
# the same tokens before its first write. No decision is asked of the model (a CPU takes seconds a prompt).
CONTEXT = 8192  # SmolLM2-135M's (its GGUF's llama.context_length)
HANGUL = "다람쥐헌쳇바퀴에타고파"
TOKENS_REFUSAL = re.compile(r"catalogue (\d+) tokens of (\d+), (\d+) left")


def hangul(length: int) -> str:
    return (HANGUL * (length // len(HANGUL) + 1))[:length]


def wide(index: int) -> dict[str, Any]:
    """A task of ~1,550 bytes as rendered (well inside a stage's byte budget) and ~1,500 tokens."""
    return {"description": f"{index} " + hangul(200), "examples": [hangul(100) for _ in range(3)]}


@pytest.fixture(scope="module")
def chat_tokenizer() -> Any:
    """The model server's tokenizer (loading.load's call), its chat template with it."""
    from transformers import AutoTokenizer

    source, keywords = pretrained_source(smollm2_gguf())
    return AutoTokenizer.from_pretrained(source, local_files_only=True, **keywords)


def prompt_tokens(chat_tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """As the model server counts a prompt before it refuses one past its context (`Engine.prompt_ids`)."""
    return len(Engine.prompt_ids(SimpleNamespace(loaded=SimpleNamespace(tokenizer=chat_tokenizer)), messages))


def registry(local: LocalServer) -> dict[str, Task]:
    status, body = local.request("GET", "/tasks")
    assert status == 200, body
    return {t["name"]: Task(t["name"], t["description"], tuple(t["examples"])) for t in body["tasks"]}


def test_the_banner_gives_the_budget_in_the_model_s_tokens(local: LocalServer) -> None:
    assert re.search(r"budget: +[\d,]+ tokens of task catalogue \(the 8,192-token context of the model served", local.banner)
    assert "prompts show at most 17 messages, 1,365 bytes of them" in local.banner


def test_a_write_past_the_model_s_context_is_refused_in_its_tokens(local: LocalServer, files, chat_tokenizer: Any) -> None:
    try:
        _writes_past_the_context(local, chat_tokenizer)
    finally:  # the module's other tests route over its two tasks
        assert main(["--base-url", local.url, "tasks", "import", str(files["tasks"]), "--prune"]) == 0


def _writes_past_the_context(local: LocalServer, chat_tokenizer: Any) -> None:
    accepted = []
    for index in range(12):  # a stage's 18,977 bytes would take all twelve: ~18,000 tokens
        status, body = local.request("PUT", f"/tasks/wide_task_{index:02d}", wide(index))
        if status != 201:
            break
        accepted.append(registry(local))
    # Every registry the API accepted: its longest system message alone, with the chat template and the
    # largest answer cap, fits the model's context.
    conversation = [Message(role="user", content="x")]
    for tasks in accepted:
        for strategy in Strategy:
            prompt = build_prompt(strategy, conversation, tasks, None)
            system = max(prompt_tokens(chat_tokenizer, [m]) for m in (prompt.messages()[0], prompt.json_messages()[0]))
            assert system + TEMPLATE_TOKENS + RoutingPrompt.largest_answer_tokens() <= CONTEXT, (len(tasks), strategy, system)

    assert status == 422 and body["error"]["code"] == "catalogue_too_large", body
    size, budget, left = map(int, TOKENS_REFUSAL.fullmatch(body["error"]["message"]).groups())
    assert size > budget and left < size - (budget - left)
    assert f"wide_task_{index:02d}" not in registry(local)

    # ... and with the transcript the router shows for this context, the longest conversations too
    largest = accepted[-1] if accepted else registry(local)
    for content in ("0123456789", HANGUL, '&"<>'):  # a token a byte, ~1 a byte, escapes
        longest = [Message(role=("user", "assistant")[i % 2], content=(content * 400)[:MAX_CONTENT_CHARS])
                   for i in range(MAX_MESSAGES - 1, -1, -1)]  # fmt: skip
        for strategy in Strategy:
            prompt = build_prompt(strategy, longest, largest, max(largest, key=len), transcript_bound(CONTEXT))
            for messages in (prompt.messages(), prompt.json_messages()):
                assert prompt_tokens(chat_tokenizer, messages) + RoutingPrompt.largest_answer_tokens() <= CONTEXT


def test_import_checks_a_file_in_the_model_s_tokens_before_its_first_write(
    local: LocalServer, files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = registry(local)
    file = tmp_path / "tasks.json"
    file.write_text(json.dumps({"tasks": [{"name": f"imported_{index:02d}", **wide(index)} for index in range(6)]}))
    monkeypatch.setenv("TASKROUTER_LOCAL_MODEL", str(smollm2_gguf()))  # as for make local
    monkeypatch.setenv("TASKROUTER_LOCAL_DIR", str(files["state"]))  # make local's: the model's facts are read already
    for name in ("TASKROUTER_SERVING_MAX_TOKENS", "TASKROUTER_SERVING_TOKENIZER"):
        monkeypatch.setenv(name, "")  # the command sets them; put back as they were after the test
    code = main(["--base-url", local.url, "tasks", "import", str(file)])
    err = capsys.readouterr().err
    assert code == 1 and TOKENS_REFUSAL.search(err) and "nothing imported" in err, err
    assert registry(local) == before


# -- logprobs: the server's numbers against a direct computation ---------------------------------------
# SmolLM2 loaded here by transformers alone (tests/unit/logprobs_reference.py: one pass over the prompt and
# the answer, the constraint's mask at each answer position, a log-softmax: vLLM 0.12's `raw_logprobs`,
# model_server/logprobs.py cites where), every entry to 1e-4, the stop token's included: for a choice whose
# names are prefixes of one another (after `recap` the stop is a real choice) and for the few-shot CoT
# regex with its reasoning line. The router's SageMaker backend then reads the same confidence from the
# server and from the endpoint's test double answering the same tokens.
LOGPROB_TASKS = {
    "recap": Task("recap", "Write a short recap of a meeting.", ("Recap the meeting for me",)),
    "recap_email": Task("recap_email", "E-mail a recap of a meeting to its attendees.", ("Send the attendees a recap",)),
}
COT_TURN = [Message(role="user", content="Recap this morning's meeting for me please.")]
TOP = 3


@pytest.fixture(scope="module")
def reference() -> tuple[Any, Any, Any]:
    """SmolLM2 by transformers alone, and an xgrammar compiler for its tokenizer whose stop is the end of its
    turn (<|im_end|>, its eos)."""
    import torch
    import xgrammar
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                 dtype=torch.float32).eval()
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.config.vocab_size,
                                                   stop_token_ids=[tokenizer.eos_token_id])
    return tokenizer, model, xgrammar.GrammarCompiler(info)


def _logprobs_answer(model_url: str, messages: list[dict[str, str]], constraint: dict[str, Any], max_tokens: int) -> dict:
    body = {"messages": messages, "max_completion_tokens": max_tokens, "temperature": 0.0, "logprobs": True,
            "top_logprobs": TOP, "return_token_ids": True, "structured_outputs": constraint}
    response = _runtime(model_url).invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/json",
                                                   Body=json.dumps(body))
    return json.loads(response["Body"].read())


def _check_logprobs(answer: dict, messages: list[dict[str, str]], reference, grammar: Any) -> dict:
    from tests.unit.logprobs_reference import assert_matches, reference_logprobs

    tokenizer, model, _ = reference
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert answer["prompt_token_ids"] == prompt_ids  # the same tokens, counted here
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["token_ids"][-1] == tokenizer.eos_token_id
    expected = reference_logprobs(model, prompt_ids, choice["token_ids"], grammar, model.config.vocab_size)
    assert_matches(choice["logprobs"]["content"], choice["token_ids"], expected, lambda t: tokenizer.decode([t]), TOP)
    assert choice["logprobs"]["content"][-1]["token"] == "<|im_end|>"
    assert len(choice["logprobs"]["content"]) == answer["usage"]["completion_tokens"]
    return choice


def test_logprobs_of_a_choice_whose_stop_is_a_real_choice(model_url: str, reference) -> None:
    messages = [{"role": "user", "content": "Say the word recap."}]

    answer = _logprobs_answer(model_url, messages, {"choice": ["recap", "recap_email", "none"]}, 16)

    grammar = reference[2].compile_grammar('root ::= "recap" | "recap_email" | "none"')  # vLLM's choice_as_grammar
    choice = _check_logprobs(answer, messages, reference, grammar)
    assert choice["message"]["content"] == "recap"  # SmolLM2's greedy answer
    stop = choice["logprobs"]["content"][-1]
    assert stop["logprob"] < -1e-3  # a real choice: `recap_email` went on with "_"
    assert "_" in [entry["token"] for entry in stop["top_logprobs"]]


@pytest.fixture(scope="module")
def cot() -> RoutingPrompt:
    return build_prompt(Strategy.FEW_SHOT_COT, COT_TURN, LOGPROB_TASKS, None)


@pytest.fixture(scope="module")
def cot_answer(model_url: str, cot: RoutingPrompt) -> dict:
    return _logprobs_answer(model_url, cot.messages(), cot.output_constraint(), cot.max_answer_tokens)


def test_logprobs_of_a_regex_with_a_reasoning_line(cot_answer: dict, cot: RoutingPrompt, reference) -> None:
    grammar = reference[2].compile_regex(cot.output_constraint()["regex"])
    choice = _check_logprobs(cot_answer, cot.messages(), reference, grammar)

    assert "\nAnswer: " in choice["message"]["content"] and len(choice["token_ids"]) > 8  # a reasoning line first


def test_the_router_reads_the_same_confidence_from_the_server_and_the_double(model_url: str, cot: RoutingPrompt,
                                                                           cot_answer: dict) -> None:
    """The router's request asks for the generated tokens' logprobs alone; the double answers the tokens
    the server generated for it. Both read as the same answer with the same confidence: the final
    answer's tokens and the stop's, the reasoning's left out."""
    from taskrouter.adapters.sagemaker_backend import SageMakerBackend
    from taskrouter.core.confidence import answer_confidence, logprobs_of

    raw = cot_answer["choices"][0]
    text = raw["message"]["content"]
    double = SageMakerRuntimeDouble()
    try:
        double.always(double.answer(text, logprobs=[(entry["token"], entry["logprob"]) for entry in raw["logprobs"]["content"]]))
        answers = [SageMakerBackend({60.0: client}, ENDPOINT, None).decide(cot, 60.0)
                   for client in (_runtime(model_url), _runtime(double.url))]  # fmt: skip
        assert double.requests[-1].json()["logprobs"] is True
    finally:
        double.close()

    expected = answer_confidence(text, cot.answer_start(text), logprobs_of(raw))
    assert answers[0].task == answers[1].task == cot.parse(text)
    assert answers[1].confidence == expected and 0 < expected <= 1  # the double: exactly the tokens it was given
    assert answers[0].confidence == pytest.approx(expected, rel=1e-6)  # the server, decoding the same again
