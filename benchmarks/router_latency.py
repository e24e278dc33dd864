"""What the router adds to a decision, warm and in a cold container, with both backends on loopback.

    .venv/bin/python benchmarks/router_latency.py [--requests N] [--containers N] [--warm-only]

One run measures, on the same machine and backends:
  - the bare backend call: the SageMaker runtime `invoke_endpoint` the router makes, alone;
  - the router: the Lambda handler end to end (API Gateway event in, response out), whose primary
    is that same call; the registry (moto) is read from the router's cache, as in steady state.
The difference is the router's own time. Then capture's cost (docs/capture.md): the same handler with
capture off, and at share 1, where every turn is redacted and sent to a teacher function on loopback
(a double of Lambda's Invoke API answering 202 at once), interleaved; and the send alone. Then cold
containers (skipped with --warm-only): fresh processes that start as a
Lambda container does (import the handler, whose init builds the router), then decide three times,
once with a healthy primary and once with a hung one (the fallback decides): the first decision
of a fresh process beside the later ones, and the fake OpenAI's own time to compare with.
Then the package size and the handler's cold start. Figures only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.footprint import import_times_ms, package_size  # noqa: E402
from tests.integration.apigw import LambdaContext, route_event  # noqa: E402
from tests.integration.lambda_double import LambdaInvokeDouble  # noqa: E402
from tests.integration.servers import OpenAIDouble, SageMakerRuntimeDouble  # noqa: E402

TASKS = ("prepare_meeting_minutes", "follow_up_email", "prepare_linkedin_post", "structure_ideas_into_doc",
         "create_one_minute_pitch")
BODY = {
    "conversation": [
        {"role": "user", "content": "I just had a call with Dana from Acme about the renewal."},
        {"role": "assistant", "content": "Great! What would you like to do next?"},
        {"role": "user", "content": "Send her a follow-up email recapping what we agreed."},
    ],
    "current_task": None,
}


def quantile(samples_ms: list[float], q: float) -> float:
    ordered = sorted(samples_ms)
    return ordered[round(q * (len(ordered) - 1))]


def percentiles(samples_ms: list[float]) -> str:
    return (f"p50 {quantile(samples_ms, 0.5):6.2f} ms   p99 {quantile(samples_ms, 0.99):6.2f} ms   "
            f"mean {statistics.fmean(samples_ms):6.2f} ms")


# A fresh process: the init phase (the handler's import builds the router), then three decisions.
_CONTAINER = """
import json, sys, time
sys.path.insert(0, {root!r})
started = time.perf_counter()
from taskrouter.handlers import router as handler
init_ms = (time.perf_counter() - started) * 1000
from tests.integration.apigw import LambdaContext, route_event
event = route_event(json.loads({body!r}))
decisions = []
for _ in range(3):
    started = time.perf_counter()
    response = handler.handler(event, LambdaContext())
    decisions.append(((time.perf_counter() - started) * 1000, json.loads(response["body"])))
print("RESULT " + json.dumps({{"init_ms": init_ms, "decisions": decisions}}))
"""


def cold_containers(runs: int, env: dict[str, str]) -> dict[str, float | list[float]]:
    """Init time and each decision's time (ms) over `runs` fresh processes, with their backends."""
    script = _CONTAINER.format(root=str(ROOT), body=json.dumps(BODY))
    init, first, later, backends = [], [], [], set()
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        result = json.loads(next(line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")))
        init.append(result["init_ms"])
        (first_ms, first_body), *rest = result["decisions"]
        first.append(first_ms)
        later += [ms for ms, _ in rest]
        backends |= {(body["backend"], body["fallback_reason"]) for _, body in result["decisions"]}
    return {"init": init, "first": first, "later": later, "backends": sorted(map(str, backends))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--containers", type=int, default=5, help="fresh processes per cold case")
    parser.add_argument("--warm-only", action="store_true", help="skip cold containers, package size and cold start")
    args = parser.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    moto_url = "http://{}:{}".format(*moto.get_host_and_port())
    sagemaker, openai = SageMakerRuntimeDouble(adapters=("bench-adapter",)), OpenAIDouble()
    hung = SageMakerRuntimeDouble(adapters=("bench-adapter",))
    hung.always(hung.answer("follow_up_email", delay_s=30))
    sagemaker.always(sagemaker.answer("follow_up_email"))
    openai.always(openai.answer("follow_up_email"))
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_DYNAMODB=moto_url, AWS_ENDPOINT_URL_SECRETS_MANAGER=moto_url,
        AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=sagemaker.url, OPENAI_BASE_URL=openai.base_url,
        TASKROUTER_TABLE_NAME="bench-tasks", TASKROUTER_SAGEMAKER_ENDPOINT="bench-endpoint",
        TASKROUTER_SAGEMAKER_COMPONENT="bench-adapter", POWERTOOLS_SERVICE_NAME="taskrouter-router",
        POWERTOOLS_METRICS_NAMESPACE="TaskRouter", NO_PROXY="127.0.0.1",
    )
    import boto3

    from taskrouter.adapters.dynamodb_registry import task_to_item
    from taskrouter.core.tasks import Task

    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName="bench-tasks", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
    )
    for name in TASKS:
        ddb.put_item(TableName="bench-tasks", Item=task_to_item(Task(name, f"{name.replace('_', ' ')} for a client")))
    secret = boto3.client("secretsmanager").create_secret(Name="bench/openai", SecretString="sk-bench")
    os.environ["TASKROUTER_OPENAI_SECRET_ARN"] = secret["ARN"]

    from taskrouter.composition import router_runtime
    from taskrouter.handlers import router as router_handler

    router = router_runtime.router()
    primary_client = router._primary._client_for(router._settings.primary_timeout_s)  # the very client it uses
    event = route_event(BODY)
    sink = io.StringIO()
    router_handler.logger.registered_handler.setStream(sink)  # log lines are written, not shown

    def routed() -> dict:
        with contextlib.redirect_stdout(sink):  # EMF metrics
            response = router_handler.handler(event, LambdaContext())
        sink.seek(0)
        sink.truncate()
        return response

    # The bare call carries the payload the router sends, captured from a routed request.
    routed()
    payload = json.dumps(sagemaker.requests[-1].json())

    def bare() -> None:
        primary_client.invoke_endpoint(
            EndpointName="bench-endpoint", InferenceComponentName="bench-adapter",
            ContentType="application/json", Accept="application/json", Body=payload,
        )["Body"].read()

    for _ in range(100):  # warm connections, caches and code paths
        bare()
        assert json.loads(routed()["body"])["backend"] == "sagemaker"

    bare_ms, router_ms, reported_ms = [], [], []
    for _ in range(args.requests):  # interleaved, so both see the same machine load
        sagemaker.reset()
        sagemaker.always(sagemaker.answer("follow_up_email"))
        started = time.perf_counter()
        bare()
        bare_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        response = routed()
        router_ms.append((time.perf_counter() - started) * 1000)
        reported_ms.append(json.loads(response["body"])["latency_ms"])

    print(f"requests: {args.requests} each, both backends answering at once on loopback")
    print(f"bare backend call (invoke_endpoint):  {percentiles(bare_ms)}")
    print(f"router, handler end to end:           {percentiles(router_ms)}")
    print(f"router, its reported latency_ms:      {percentiles(reported_ms)}")
    print(f"router's own time (router - bare):    p50 {quantile(router_ms, 0.5) - quantile(bare_ms, 0.5):6.2f} ms   "
          f"p99 {quantile(router_ms, 0.99) - quantile(bare_ms, 0.99):6.2f} ms")

    capture_figures(args.requests, routed, router_runtime, router_handler)
    if args.warm_only:
        for double in (sagemaker, hung, openai):
            double.close()
        moto.stop()
        return

    # The fake OpenAI's own time: a bare call with the official client, warm.
    import openai as openai_sdk

    fake = openai_sdk.OpenAI(api_key="sk-bench", base_url=openai.base_url, max_retries=0)
    fake_ms = []
    for _ in range(50):
        started = time.perf_counter()
        fake.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}])
        fake_ms.append((time.perf_counter() - started) * 1000)
    settings = router._settings
    print(f"fake OpenAI's own time (a bare call): {percentiles(fake_ms)}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lambdas")}
    for case, url in (("healthy primary", sagemaker.url), ("hung primary", hung.url)):
        cold = cold_containers(args.containers, {**env, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url})
        print(f"cold containers, {case} ({args.containers} fresh processes; decided by {', '.join(cold['backends'])}):")
        print(f"  init (import, router built):  median {statistics.median(cold['init']):7.1f} ms")
        print(f"  first decision:               median {statistics.median(cold['first']):7.1f} ms   "
              f"max {max(cold['first']):7.1f} ms")
        print(f"  later decisions (warm):       median {statistics.median(cold['later']):7.1f} ms   "
              f"max {max(cold['later']):7.1f} ms")
    print(f"  (zero-shot: primary timeout {settings.primary_timeout_s * 1000:.0f} ms, hedge after "
          f"{(settings.hedge_after_s or 0) * 1000:.0f} ms)")
    zipped, unpacked = package_size()
    print(f"package: {zipped / 1e6:.2f} MB zipped, {unpacked / 1e6:.2f} MB unpacked")
    times = sorted(import_times_ms(10))
    print(f"cold start of the handler (import, router built): median {statistics.median(times):.0f} ms, "
          f"max {times[-1]:.0f} ms (10 runs)")
    for double in (sagemaker, hung, openai):
        double.close()
    moto.stop()


def capture_figures(requests: int, routed, router_runtime, router_handler) -> None:
    """The handler with capture off and at share 1 (every turn sent), interleaved; then the send alone."""
    from taskrouter.adapters.settings import RuntimeSettings
    from taskrouter.core.capture import encode

    teacher = LambdaInvokeDouble()
    os.environ["AWS_ENDPOINT_URL_LAMBDA"] = teacher.url  # botocore reads it from the environment
    settings = RuntimeSettings.from_env(
        {**os.environ, "TASKROUTER_CAPTURE_FUNCTION": "bench-teacher", "TASKROUTER_CAPTURE_SHARE": "1"}
    )
    capture = router_runtime.build_capture(settings)  # as a container builds it at start (its dry run included)
    original = router_runtime.capture
    modes = {"off": lambda: None, "share 1": lambda: capture}
    timings: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for _ in range(50):  # warm the sender's connection and code paths
            router_runtime.capture = modes["share 1"]
            routed()
        for _ in range(requests):
            for mode, capture_of in modes.items():
                router_runtime.capture = capture_of
                started = time.perf_counter()
                routed()
                timings[mode].append((time.perf_counter() - started) * 1000)
    finally:
        router_runtime.capture = original
    sent = len(teacher.invocations("Event"))
    payload = encode(teacher.records()[-1])
    send_ms = []
    for _ in range(requests):
        started = time.perf_counter()
        assert capture.sink.send(payload) is None
        send_ms.append((time.perf_counter() - started) * 1000)
    teacher.close()
    off, on = timings["off"], timings["share 1"]
    print(f"capture off, handler end to end:      {percentiles(off)}")
    print(f"capture at share 1, end to end:       {percentiles(on)}   ({sent} records sent, {len(payload)} bytes each)")
    print(f"capture's cost (share 1 - off):       p50 {quantile(on, 0.5) - quantile(off, 0.5):+6.2f} ms   "
          f"p99 {quantile(on, 0.99) - quantile(off, 0.99):+6.2f} ms")
    print(f"the send alone (Invoke Event, 202):   {percentiles(send_ms)}")


if __name__ == "__main__":
    main()
