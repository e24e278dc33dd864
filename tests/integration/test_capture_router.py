"""The router handler's capture (docs/capture.md): a sampled turn is built, redacted and sent to the
teacher function as an asynchronous Lambda invocation, within its bound, before the handler returns.

The teacher function is `LambdaInvokeDouble`, a loopback server speaking Lambda's Invoke API as the
router's botocore client calls it (202 for an `Event` invocation); SSM (the kill switch) is moto's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from taskrouter.composition import router_runtime
from taskrouter.core.tasks import tasks_sha256
from taskrouter.core.tasks import Task

from .conftest import REGION, TASK_NAMES, TASKS, AwsState, Invoke
from .lambda_double import LambdaInvokeDouble
from .servers import OpenAIDouble, SageMakerRuntimeDouble
from .test_router_handler import _emf_documents, _log_lines, _metric_values, assistant, route_body, user

FUNCTION = "taskrouter-test-teacher"
SEND_TIMEOUT_MS = 100
SWITCH = "/taskrouter/test/capture"
EMAIL, PHONE = "dana.smith@acme-corp.example", "+1 415 555 0134"
CONVERSATION = [
    user(f"I had a call with Dana Smith ({EMAIL}, {PHONE}) about the Zanzibar renewal."),
    assistant(f"Shall I write to {EMAIL} or call {PHONE}?"),
    user("Send her a follow-up email recapping the Zanzibar pricing."),
]
CONTENT_WORDS = ("Zanzibar", "Dana", "acme-corp", "555 0134", "recapping")


@pytest.fixture(scope="module")
def _lambda_double() -> Iterator[LambdaInvokeDouble]:
    double = LambdaInvokeDouble()
    yield double
    double.close()


def _clear_capture_caches() -> None:
    router_runtime.capture.cache_clear()
    router_runtime.serving_adapter.cache_clear()


@pytest.fixture
def teacher(_lambda_double: LambdaInvokeDouble, router_env: pytest.MonkeyPatch) -> Iterator[LambdaInvokeDouble]:
    """Capture on, every turn drawn, sent to the double; each test builds the capture as a container
    does at start (`start_capture`), after setting what it needs."""
    _lambda_double.reset()
    for name, value in {
        "TASKROUTER_CAPTURE_FUNCTION": FUNCTION,
        "AWS_ENDPOINT_URL_LAMBDA": _lambda_double.url,
        "TASKROUTER_CAPTURE_SHARE": "1",
        "TASKROUTER_CAPTURE_FALLBACK_SHARE": "1",
        "TASKROUTER_CAPTURE_SEND_TIMEOUT_MS": str(SEND_TIMEOUT_MS),
    }.items():
        router_env.setenv(name, value)
    for name in ("TASKROUTER_CAPTURE_PARAMETER", "TASKROUTER_CAPTURE_REDACT", "TASKROUTER_ADAPTER_NAME",
                 "TASKROUTER_ADAPTER_TASKS", "TASKROUTER_CAPTURE_UNSEEN_SHARE"):  # fmt: skip
        router_env.delenv(name, raising=False)
    _clear_capture_caches()
    yield _lambda_double
    _clear_capture_caches()
    _lambda_double.reset()


def start_capture(invoke: Invoke) -> router_runtime.Capture:
    """The container's start: the router and the capture built before any request (`invoke` has
    cleared the router), the dry run done."""
    router_runtime.router()
    built = router_runtime.capture()
    assert built is not None
    return built


def only_record(teacher: LambdaInvokeDouble) -> dict[str, Any]:
    records = teacher.records()
    assert len(records) == 1, len(records)
    return records[0]


def metric(stdout: str, name: str) -> list[Any]:
    return [value for _, value in _metric_values(_emf_documents(stdout), name)]


# -- a sampled turn ----------------------------------------------------------------------------------
def test_a_sampled_turn_is_sent_as_an_asynchronous_invocation_of_the_teacher(
    invoke: Invoke, teacher: LambdaInvokeDouble, sagemaker: SageMakerRuntimeDouble, capsys: pytest.CaptureFixture[str]
):
    start_capture(invoke)
    assert [teacher.function_of(r) for r in teacher.invocations("DryRun")] == [FUNCTION]  # checked at start
    sagemaker.always(sagemaker.answer("follow_up_email"))
    capsys.readouterr()

    result = invoke(route_body(CONVERSATION))

    assert result.status == 200 and result.json()["task"] == "follow_up_email"
    [sent] = teacher.invocations("Event")
    assert teacher.function_of(sent) == FUNCTION
    assert sent.header("X-Amz-Invocation-Type") == "Event"
    assert sent.raw_body.count(b"\n") == 0  # one line of JSON
    record = json.loads(sent.raw_body)
    assert len(record["id"]) == 32 and record["time"].endswith("Z") and record["schema"] == 2
    assert record["conversation"] == [
        {"role": "user", "content": "I had a call with Dana Smith ([email], [phone]) about the Zanzibar renewal."},
        {"role": "assistant", "content": "Shall I write to [email] or call [phone]?"},
        {"role": "user", "content": "Send her a follow-up email recapping the Zanzibar pricing."},
    ]
    assert record["redaction"] == ["email", "phone"]
    assert [task["name"] for task in record["tasks"]] == list(TASK_NAMES)
    assert record["requested_tasks"] is None and record["running_task"] is None  # no allow-list: the whole registry
    live = [Task(name, description, tuple(examples)) for name, (description, examples) in TASKS.items()]
    assert record["registry_sha256"] == tasks_sha256(live)
    assert record["decision"] == {"task": "follow_up_email", "event": "start", "backend": "sagemaker", "fallback_reason": None}
    assert record["primary"]["answer"] == "follow_up_email" and record["primary"]["latency_ms"] > 0
    assert record["sampling"] == {"probability": 1.0, "uniform": True, "reason": "primary"}
    assert (record["adapter"], record["unseen_tasks"], record["strategy"]) == ("base", [], "zero_shot")
    assert 0 < record["latency_ms"] <= result.json()["latency_ms"]  # the decision's; the answer's has the send
    assert "teacher" not in record  # the teacher function adds it

    stdout = capsys.readouterr().out
    assert metric(stdout, "CaptureDropped") == [[0.0]]
    assert len(metric(stdout, "CaptureSendLatency")) == 1
    assert [(dims["adapter"], value) for dims, value in _metric_values(_emf_documents(stdout), "UnseenTasks")] == [
        ("base", [0.0])
    ]


def test_a_turn_the_fallback_decided_is_drawn_at_the_fallback_share(
    invoke: Invoke, teacher: LambdaInvokeDouble, router_env: pytest.MonkeyPatch,
    sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble,
):  # fmt: skip
    start_capture(invoke)
    sagemaker.always(sagemaker.model_error())
    openai_server.always(openai_server.answer("prepare_meeting_minutes"))

    assert invoke(route_body(CONVERSATION)).json()["backend"] == "openai"
    record = only_record(teacher)
    assert record["decision"]["fallback_reason"] == "error" and record["decision"]["task"] == "prepare_meeting_minutes"
    assert record["primary"]["answer"] is None and record["primary"]["latency_ms"] is not None
    assert record["sampling"] == {"probability": 1.0, "uniform": False, "reason": "fallback"}

    router_env.setenv("TASKROUTER_CAPTURE_FALLBACK_SHARE", "0")
    _clear_capture_caches()
    teacher.reset()
    start_capture(invoke)
    assert invoke(route_body(CONVERSATION)).json()["backend"] == "openai"
    assert teacher.records() == []


def test_a_turn_routed_with_an_allow_list_records_it_and_the_running_task_it_left_out(
    invoke: Invoke, teacher: LambdaInvokeDouble, sagemaker: SageMakerRuntimeDouble
):
    """The issue's turn: `tasks: ["follow_up_email"]` while a pitch runs. Without the allow-list a harvest
    would replay it over every task; without the pitch's text, with no running task."""
    start_capture(invoke)
    sagemaker.always(sagemaker.answer("none"))
    minutes = [user("Can you write up the minutes of this morning's call?")]
    body = route_body(minutes, current_task="create_one_minute_pitch", tasks=["follow_up_email", "no_such_task"])
    assert invoke(body).json()["event"] == "end"
    record = only_record(teacher)
    assert record["requested_tasks"] == ["follow_up_email", "no_such_task"]  # as sent
    assert [task["name"] for task in record["tasks"]] == ["follow_up_email"]
    assert record["current_task"] == "create_one_minute_pitch"
    description, examples = TASKS["create_one_minute_pitch"]
    assert record["running_task"] == {"name": "create_one_minute_pitch", "description": description, "examples": examples[:3]}


def test_turns_with_tasks_the_adapter_never_saw_are_drawn_apart_from_the_uniform_sample(
    invoke: Invoke, teacher: LambdaInvokeDouble, router_env: pytest.MonkeyPatch,
    sagemaker: SageMakerRuntimeDouble, capsys: pytest.CaptureFixture[str],
):  # fmt: skip
    router_env.setenv("TASKROUTER_CAPTURE_SHARE", "0")  # no uniform sample: only the unseen draw
    router_env.setenv("TASKROUTER_ADAPTER_NAME", "taskrouter-test-adapter-v2")
    router_env.setenv("TASKROUTER_ADAPTER_TASKS", "follow_up_email,prepare_meeting_minutes")
    start_capture(invoke)
    sagemaker.always(sagemaker.answer("follow_up_email"))
    capsys.readouterr()

    assert invoke(route_body(CONVERSATION, tasks=["follow_up_email", "prepare_meeting_minutes"])).status == 200
    assert teacher.records() == []  # every allowed task seen: the uniform draw alone, at 0
    assert invoke(route_body(CONVERSATION)).status == 200
    record = only_record(teacher)
    assert record["sampling"] == {"probability": 1.0, "uniform": False, "reason": "unseen"}
    assert record["adapter"] == "taskrouter-test-adapter-v2"
    assert record["unseen_tasks"] == ["create_one_minute_pitch", "prepare_linkedin_post", "structure_ideas_into_doc"]
    unseen = _metric_values(_emf_documents(capsys.readouterr().out), "UnseenTasks")
    assert [(dims["adapter"], value) for dims, value in unseen] == [("taskrouter-test-adapter-v2", [3.0])] * 2


def test_redaction_none_sends_the_conversation_as_it_was(
    invoke: Invoke, teacher: LambdaInvokeDouble, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble
):
    router_env.setenv("TASKROUTER_CAPTURE_REDACT", "none")
    start_capture(invoke)
    sagemaker.always(sagemaker.answer("follow_up_email"))
    invoke(route_body(CONVERSATION))
    record = only_record(teacher)
    assert [m["content"] for m in record["conversation"]] == [m["content"] for m in CONVERSATION]
    assert record["redaction"] == []


# -- the bound -------------------------------------------------------------------------------------
def test_a_teacher_endpoint_that_hangs_never_delays_the_answer_beyond_the_bound(
    invoke: Invoke, teacher: LambdaInvokeDouble, sagemaker: SageMakerRuntimeDouble, capsys: pytest.CaptureFixture[str]
):
    start_capture(invoke)
    sagemaker.always(sagemaker.answer("follow_up_email"))
    quick = []
    for _ in range(3):  # the same request, sent at once: what a turn costs here without a hang
        started = time.perf_counter()
        assert invoke(route_body(CONVERSATION)).status == 200
        quick.append(time.perf_counter() - started)
    teacher.script(LambdaInvokeDouble.accepted(delay_s=5))  # Lambda's endpoint stops answering
    capsys.readouterr()

    started = time.perf_counter()
    result = invoke(route_body(CONVERSATION))
    elapsed = time.perf_counter() - started

    assert result.status == 200 and result.json()["task"] == "follow_up_email"
    slack_s = 0.75  # generous: a loaded machine, and botocore's connect plus read
    assert elapsed < min(quick) + SEND_TIMEOUT_MS / 1000 + slack_s, (elapsed, quick)
    assert len(teacher.invocations("Event")) == 4  # one try: the dropped record is not sent again
    stdout = capsys.readouterr().out
    assert metric(stdout, "CaptureDropped") == [[1.0]]
    [dropped] = [line for line in _log_lines(stdout) if line.get("message") == "capture dropped"]
    assert dropped["reason"] == "timeout" and dropped["level"] == "WARNING"


def test_a_record_lambda_refuses_is_dropped_and_counted_never_retried(
    invoke: Invoke, teacher: LambdaInvokeDouble, sagemaker: SageMakerRuntimeDouble, capsys: pytest.CaptureFixture[str]
):
    start_capture(invoke)
    sagemaker.always(sagemaker.answer("follow_up_email"))
    teacher.script(LambdaInvokeDouble.error(429, "TooManyRequestsException", "Rate exceeded"))
    capsys.readouterr()

    assert invoke(route_body(CONVERSATION)).status == 200
    assert len(teacher.invocations("Event")) == 1
    stdout = capsys.readouterr().out
    assert metric(stdout, "CaptureDropped") == [[1.0]]
    [dropped] = [line for line in _log_lines(stdout) if line.get("message") == "capture dropped"]
    assert (dropped["reason"], dropped["detail"]) == ("throttled", "TooManyRequestsException")


def test_a_fault_of_the_capture_s_own_never_fails_the_decision(
    invoke: Invoke, teacher: LambdaInvokeDouble, sagemaker: SageMakerRuntimeDouble, capsys: pytest.CaptureFixture[str]
):
    def broken() -> router_runtime.Capture:
        raise RuntimeError("no capture")

    router_runtime.router()
    sagemaker.always(sagemaker.answer("follow_up_email"))
    capsys.readouterr()
    built, router_runtime.capture = router_runtime.capture, broken
    try:
        result = invoke(route_body(CONVERSATION))
    finally:
        router_runtime.capture = built
    assert result.status == 200 and result.json()["task"] == "follow_up_email"
    stdout = capsys.readouterr().out
    assert metric(stdout, "CaptureDropped") == [[1.0]]
    [dropped] = [line for line in _log_lines(stdout) if line.get("message") == "capture dropped"]
    assert (dropped["reason"], dropped["detail"]) == ("error", "RuntimeError")


# -- the kill switch -------------------------------------------------------------------------------
@pytest.fixture
def ssm(aws: AwsState, router_env: pytest.MonkeyPatch) -> Any:
    router_env.setenv("AWS_ENDPOINT_URL_SSM", aws.endpoint_url)
    router_env.setenv("TASKROUTER_CAPTURE_PARAMETER", SWITCH)
    return boto3.client(
        "ssm", region_name=REGION, endpoint_url=aws.endpoint_url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def test_the_kill_switch_stops_capture_with_no_deploy(
    invoke: Invoke, teacher: LambdaInvokeDouble, ssm: Any, sagemaker: SageMakerRuntimeDouble
):
    ssm.put_parameter(Name=SWITCH, Value="off", Type="String")
    setup = start_capture(invoke)
    sagemaker.always(sagemaker.answer("follow_up_email"))

    assert invoke(route_body(CONVERSATION)).status == 200
    assert teacher.records() == []  # off: decided, nothing sent

    ssm.put_parameter(Name=SWITCH, Value="on", Type="String", Overwrite=True)
    assert invoke(route_body(CONVERSATION)).status == 200
    assert teacher.records() == []  # the switch is read at most once a minute
    setup.switch._parameter._read_at -= 60  # a minute later (the container's cached read has aged)
    assert invoke(route_body(CONVERSATION)).status == 200
    assert len(teacher.records()) == 1

    ssm.delete_parameter(Name=SWITCH)  # SSM failing keeps the last state: on
    setup.switch._parameter._read_at -= 60
    assert invoke(route_body(CONVERSATION)).status == 200
    assert len(teacher.records()) == 2


def test_an_unreadable_switch_at_start_leaves_capture_on(
    invoke: Invoke, teacher: LambdaInvokeDouble, ssm: Any, sagemaker: SageMakerRuntimeDouble
):
    start_capture(invoke)  # no such parameter
    sagemaker.always(sagemaker.answer("follow_up_email"))
    assert invoke(route_body(CONVERSATION)).status == 200
    assert len(teacher.records()) == 1


def test_capture_is_off_without_a_teacher_function(
    invoke: Invoke, teacher: LambdaInvokeDouble, router_env: pytest.MonkeyPatch, sagemaker: SageMakerRuntimeDouble,
    capsys: pytest.CaptureFixture[str],
):  # fmt: skip
    router_env.delenv("TASKROUTER_CAPTURE_FUNCTION")
    router_runtime.router()
    assert router_runtime.capture() is None
    sagemaker.always(sagemaker.answer("follow_up_email"))
    capsys.readouterr()
    assert invoke(route_body(CONVERSATION)).status == 200
    assert teacher.requests == []
    stdout = capsys.readouterr().out
    assert metric(stdout, "CaptureDropped") == [] and len(metric(stdout, "UnseenTasks")) == 1


# -- no content in logs ----------------------------------------------------------------------------
def test_no_conversation_text_appears_in_any_log_line(
    invoke: Invoke, teacher: LambdaInvokeDouble, sagemaker: SageMakerRuntimeDouble, openai_server: OpenAIDouble,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
):  # fmt: skip
    caplog.set_level("DEBUG", logger="taskrouter")
    start_capture(invoke)
    sagemaker.script(sagemaker.answer("follow_up_email"), sagemaker.model_error(), sagemaker.answer("follow_up_email"))
    openai_server.always(openai_server.answer("prepare_meeting_minutes"))
    teacher.script(
        LambdaInvokeDouble.accepted(),  # sent
        LambdaInvokeDouble.error(400, "InvalidRequestContentException", f"Could not parse {CONVERSATION[0]['content']}"),
        LambdaInvokeDouble.accepted(delay_s=5),  # dropped: timeout
    )

    results = [invoke(route_body(CONVERSATION)) for _ in range(3)]

    assert [r.status for r in results] == [200, 200, 200]
    assert len(teacher.records()) == 3
    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    for word in CONTENT_WORDS:
        assert word not in everything, word
    assert EMAIL not in everything and PHONE not in everything
    drops = [line for line in _log_lines(captured.out) if line.get("message") == "capture dropped"]
    assert [(line["reason"], line["detail"]) for line in drops] == [
        ("error", "InvalidRequestContentException"), ("timeout", "ReadTimeoutError"),
    ]  # fmt: skip
