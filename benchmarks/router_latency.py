"""What the router adds to a decision, with both backends answering at once on loopback.

    .venv/bin/python benchmarks/router_latency.py [--requests N]

One run measures, on the same machine and backends:
  - the bare backend call: the SageMaker runtime `invoke_endpoint` the router makes, alone;
  - the router: the Lambda handler end to end (API Gateway event in, response out), whose primary
    is that same call; the registry (moto) is read from the router's cache, as in steady state.
The difference is the router's own time. Then the package size and the handler's cold import.
Figures only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.footprint import import_times_ms, package_size  # noqa: E402
from tests.integration.apigw import LambdaContext, route_event  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    moto_url = "http://{}:{}".format(*moto.get_host_and_port())
    sagemaker, openai = SageMakerRuntimeDouble(), OpenAIDouble()
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

    from taskrouter.adapters import runtime
    from taskrouter.handlers import router as router_handler

    router = runtime.router()
    primary_client = router._primary._client  # the very client the router uses
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
    zipped, unpacked = package_size()
    print(f"package: {zipped / 1e6:.2f} MB zipped, {unpacked / 1e6:.2f} MB unpacked")
    times = sorted(import_times_ms(10))
    print(f"cold import of the handler module: median {statistics.median(times):.0f} ms, max {times[-1]:.0f} ms (10 runs)")
    sagemaker.close()
    openai.close()
    moto.stop()


if __name__ == "__main__":
    main()
