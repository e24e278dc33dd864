"""Lambda containers for `make local`: each one a process of its own that initialises the functions
once, then runs their handlers one request at a time, as a Lambda execution environment does.

The HTTP server hands every complete request to a free container, so requests are served
concurrently while each handler keeps Lambda's one-invocation-at-a-time model (its module state,
Powertools' logger and metrics, the router's breaker and caches are per container, as in AWS). A
container found dead is replaced in the background and the request goes to another one; a
container that outlives the function timeout is replaced too, and its request answered as API
Gateway answers a failed integration.

Between invocations a container is frozen, as Lambda freezes an execution environment once its
handler has answered: SIGSTOP when its answer is in, SIGCONT when the next event is handed to it. A
thread a handler leaves running makes no progress in between and, when the server stops, never runs
again: work that would be lost in AWS is lost here too. The function timeout counts from the hand-over,
so frozen time never counts against it.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from taskrouter.local.apigw import LambdaContext
from taskrouter.local.console import ReadableLog, say

_READY = "ready"
REGISTRY_RESOURCES = ("/tasks", "/tasks/{name}")  # the registry function's; any other path is the router's
# The functions' handlers, as "module:attribute" (a test may name handlers of its own).
REGISTRY_HANDLER = "taskrouter.handlers.registry:handler"
ROUTER_HANDLER = "taskrouter.handlers.router:handler"
_STOP_GRACE_S = 5.0


def _handler(reference: str) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _container_main(connection: Connection, registry_handler: str, router_handler: str) -> None:
    """A container's life: the init phase (imports, clients), then one invocation after another."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    if os.environ.get("TASKROUTER_LOCAL_LOG_FORMAT", "text") != "json":
        # Before the handlers import: their Powertools loggers take the sys.stdout of their creation.
        # The JSON they write is what a Lambda writes; here it reaches the terminal as text.
        metrics = os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() not in ("true", "1")
        sys.stdout = ReadableLog(sys.stdout, metrics=metrics)
    registry, router = _handler(registry_handler), _handler(router_handler)

    connection.send(_READY)
    while True:
        try:
            event = connection.recv()
        except (EOFError, OSError):  # the server has gone
            return
        handler = registry if event.get("resource") in REGISTRY_RESOURCES else router
        connection.send(handler(event, LambdaContext()))


class _Container:
    def __init__(self, context: Any, registry_handler: str, router_handler: str) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_container_main, args=(child, registry_handler, router_handler), daemon=True
        )
        self.process.start()
        child.close()

    def wait_ready(self, timeout_s: float) -> None:
        if not self.connection.poll(timeout_s) or self.connection.recv() != _READY:
            raise RuntimeError("a Lambda container did not start")
        say(f"Lambda container {self.process.pid} ready")

    def freeze(self) -> None:
        """Stop every thread of the container, as Lambda freezes an environment between invocations."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, number: int) -> None:
        if self.process.exitcode is not None:  # it has ended (and is reaped: its pid may be another's now)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, number)

    def stop(self) -> None:
        """End the container, frozen or not, without letting it run: SIGTERM first, so that the SIGCONT
        after it wakes a frozen process only to end it (a stopped process holds SIGTERM until resumed),
        then SIGKILL if it has not ended within the grace."""
        self.connection.close()
        self.process.terminate()
        self.thaw()
        self.process.join(timeout=_STOP_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=_STOP_GRACE_S)


class ContainerFailed(Exception):
    """The container died or outlived the function timeout: the request has no answer."""


class Containers:
    def __init__(
        self,
        count: int,
        timeout_s: float,
        start_timeout_s: float = 60.0,
        *,
        registry_handler: str = REGISTRY_HANDLER,
        router_handler: str = ROUTER_HANDLER,
    ) -> None:
        # spawn, not fork: a container starts from a clean interpreter, as a Lambda environment does,
        # and a replacement can be started safely while the server's threads run.
        self._context = multiprocessing.get_context("spawn")
        self._handlers = (registry_handler, router_handler)
        self._timeout_s = timeout_s
        self._start_timeout_s = start_timeout_s
        self._idle: queue.Queue[_Container] = queue.Queue()
        self._lock = threading.Lock()
        self._all: list[_Container] = []
        self._closed = False
        self._replacements: list[threading.Thread] = []
        started = [self._start() for _ in range(count)]
        for container in started:
            assert container is not None
            container.wait_ready(start_timeout_s)
            container.freeze()  # initialised, and idle until its first invocation
            self._idle.put(container)

    def _start(self) -> _Container | None:
        """A new container, or None once the pool is closed (a replacement must not outlive it)."""
        with self._lock:
            if self._closed:
                return None
            container = _Container(self._context, *self._handlers)
            self._all.append(container)
        return container

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """The handler's response to `event`, from the next free container: one found dead before the
        event reached it is replaced and the next one tried; one that takes the event and no answer
        comes within the function timeout is replaced, and the request fails. The container is thawed
        as the event is handed to it, and frozen again once its answer is in: the timeout counts from
        the hand-over, never the time it spent frozen."""
        for _ in range(len(self._all) + 1):
            try:
                container = self._idle.get(timeout=self._timeout_s)
            except queue.Empty:
                raise ContainerFailed("no container became free within the function timeout") from None
            container.thaw()  # before the send: an event larger than the pipe's buffer needs it reading
            try:
                container.connection.send(event)
            except OSError:  # it died while idle: the event never reached it
                self._replace_in_background(container)
                continue
            try:
                if container.connection.poll(self._timeout_s):
                    response = container.connection.recv()
                    container.freeze()
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
            if fresh is None:
                return
            try:
                fresh.wait_ready(self._start_timeout_s)
            except (RuntimeError, EOFError, OSError):
                with self._lock:
                    if fresh in self._all:
                        self._all.remove(fresh)
                fresh.stop()
                return  # one container fewer; the others keep serving
            fresh.freeze()
            with self._lock:
                if not self._closed:
                    self._idle.put(fresh)
                    return
            fresh.stop()  # the pool closed while it started

        thread = threading.Thread(target=replace, name="container-replacement", daemon=True)
        with self._lock:
            self._replacements = [*(t for t in self._replacements if t.is_alive()), thread]
        thread.start()

    def close(self) -> None:
        """Stop every container, frozen or not, and any replacement still starting: none outlives the pool."""
        with self._lock:
            self._closed = True
            containers, self._all = self._all, []
            replacements = list(self._replacements)
        for container in containers:
            container.stop()
        for thread in replacements:
            thread.join(timeout=self._start_timeout_s + 2 * _STOP_GRACE_S)
