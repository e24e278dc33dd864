"""Lambda containers for `make local`: each one a process of its own that initialises the functions
once, then runs their handlers one request at a time, as a Lambda execution environment does.

The HTTP server hands every complete request to a free container, so requests are served
concurrently while each handler keeps Lambda's one-invocation-at-a-time model (its module state,
Powertools' logger and metrics, the router's breaker and caches are per container, as in AWS). A
container found dead is replaced in the background and the request goes to another one; a
container that outlives the function timeout is replaced too, and its request answered as API
Gateway answers a failed integration.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from taskrouter.local.apigw import LambdaContext
from taskrouter.local.console import ReadableLog, say

_READY = "ready"
REGISTRY_RESOURCES = ("/tasks", "/tasks/{name}")  # the registry function's; any other path is the router's


def _container_main(connection: Connection) -> None:
    """A container's life: the init phase (imports, clients), then one invocation after another."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    if os.environ.get("TASKROUTER_LOCAL_LOG_FORMAT", "text") != "json":
        # Before the handlers import: their Powertools loggers take the sys.stdout of their creation.
        # The JSON they write is what a Lambda writes; here it reaches the terminal as text.
        metrics = os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() not in ("true", "1")
        sys.stdout = ReadableLog(sys.stdout, metrics=metrics)
    from taskrouter.handlers import registry, router

    connection.send(_READY)
    while True:
        try:
            event = connection.recv()
        except (EOFError, OSError):  # the server has gone
            return
        handler = registry.handler if event.get("resource") in REGISTRY_RESOURCES else router.handler
        connection.send(handler(event, LambdaContext()))


class _Container:
    def __init__(self, context: Any) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_container_main, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def wait_ready(self, timeout_s: float) -> None:
        if not self.connection.poll(timeout_s) or self.connection.recv() != _READY:
            raise RuntimeError("a Lambda container did not start")
        say(f"Lambda container {self.process.pid} ready")

    def stop(self) -> None:
        self.connection.close()
        self.process.terminate()
        self.process.join(timeout=5)


class ContainerFailed(Exception):
    """The container died or outlived the function timeout: the request has no answer."""


class Containers:
    def __init__(self, count: int, timeout_s: float, start_timeout_s: float = 60.0) -> None:
        # spawn, not fork: a container starts from a clean interpreter, as a Lambda environment does,
        # and a replacement can be started safely while the server's threads run.
        self._context = multiprocessing.get_context("spawn")
        self._timeout_s = timeout_s
        self._start_timeout_s = start_timeout_s
        self._idle: queue.Queue[_Container] = queue.Queue()
        self._lock = threading.Lock()
        self._all: list[_Container] = []
        started = [self._start() for _ in range(count)]
        for container in started:
            container.wait_ready(start_timeout_s)
            self._idle.put(container)

    def _start(self) -> _Container:
        container = _Container(self._context)
        with self._lock:
            self._all.append(container)
        return container

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """The handler's response to `event`, from the next free container: one found dead before the
        event reached it is replaced and the next one tried; one that takes the event and no answer
        comes within the function timeout is replaced, and the request fails."""
        for _ in range(len(self._all) + 1):
            try:
                container = self._idle.get(timeout=self._timeout_s)
            except queue.Empty:
                raise ContainerFailed("no container became free within the function timeout") from None
            try:
                container.connection.send(event)
            except OSError:  # it died while idle: the event never reached it
                self._replace_in_background(container)
                continue
            try:
                if container.connection.poll(self._timeout_s):
                    response = container.connection.recv()
                    self._idle.put(container)
                    return response
            except (EOFError, OSError):
                pass
            self._replace_in_background(container)
            raise ContainerFailed(f"no answer within the function timeout of {self._timeout_s:.0f} s")
        raise ContainerFailed("every container was found dead")

    def _replace_in_background(self, broken: _Container) -> None:
        """Stop `broken` and start another in its place, off the request's path."""
        with self._lock:
            if broken in self._all:
                self._all.remove(broken)

        def replace() -> None:
            broken.stop()
            fresh = self._start()
            try:
                fresh.wait_ready(self._start_timeout_s)
            except (RuntimeError, EOFError, OSError):
                with self._lock:
                    self._all.remove(fresh)
                fresh.stop()
                return  # one container fewer; the others keep serving
            self._idle.put(fresh)

        threading.Thread(target=replace, name="container-replacement", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            containers, self._all = self._all, []
        for container in containers:
            container.stop()
