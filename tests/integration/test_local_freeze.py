"""`make local`'s Lambda containers are frozen between invocations, as Lambda freezes an execution
environment once its handler has answered (docs/capture.md): a thread left running after the answer
makes no progress until the next invocation, and is lost when the server stops. A design that would
lose work in AWS loses it here too.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskrouter.local.containers import Containers, ContainerFailed

HANDLER = "tests.integration.freeze_handler:handler"


def _containers(timeout_s: float) -> Containers:
    return Containers(1, timeout_s=timeout_s, registry_handler=HANDLER, router_handler=HANDLER)


@pytest.fixture
def containers() -> Iterator[Containers]:
    pool = _containers(timeout_s=10)
    yield pool
    pool.close()


def _state(pid: int) -> str:
    """The process's state letter from /proc: T when stopped, S when sleeping, R when running."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _eventually(condition: Callable[[], bool], within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _pid(response: dict) -> int:
    assert response["statusCode"] == 200, response
    return int(response["body"])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_container_is_frozen_between_invocations(containers: Containers):
    pid = _pid(containers.invoke({}))
    assert _eventually(lambda: _state(pid) == "T"), _state(pid)
    assert _pid(containers.invoke({"busy_s": 0.3})) == pid  # thawed for its invocation, then frozen again
    assert _eventually(lambda: _state(pid) == "T"), _state(pid)


def test_a_thread_left_after_the_answer_runs_only_when_the_next_invocation_thaws_it(
    containers: Containers, tmp_path: Path
):
    record = tmp_path / "record"
    containers.invoke({"write": str(record), "after_s": 0.2})
    time.sleep(1.0)  # five times what the thread needed, had the container kept running
    assert not record.exists(), "a background thread ran while its container was frozen"
    containers.invoke({"busy_s": 0.5})  # the next invocation thaws the container: the thread goes on
    assert _eventually(record.exists, within_s=2.0)


def test_a_thread_left_in_a_frozen_container_is_lost_when_the_server_stops(tmp_path: Path):
    pool = _containers(timeout_s=10)
    record = tmp_path / "record"
    pid = _pid(pool.invoke({"write": str(record), "after_s": 0.2}))
    started = time.monotonic()
    pool.close()  # a frozen container is ended, and ended without running
    assert time.monotonic() - started < 4.0, "stopping a frozen container waited for its kill"
    time.sleep(0.5)
    assert not record.exists(), "the frozen container ran its thread while being stopped"
    assert not Path(f"/proc/{pid}").exists() or _state(pid) == "Z"


def test_frozen_time_does_not_count_against_the_function_timeout():
    pool = _containers(timeout_s=1.0)
    try:
        pid = _pid(pool.invoke({}))
        time.sleep(1.5)  # frozen for longer than the function timeout
        assert _pid(pool.invoke({"busy_s": 0.5})) == pid  # answered in time by the same container
        with pytest.raises(ContainerFailed):  # an invocation that outlives the timeout still fails
            pool.invoke({"busy_s": 2.0})
    finally:
        pool.close()


def test_stopping_a_frozen_container_ends_it_by_its_sigterm():
    pool = _containers(timeout_s=10)
    pool.invoke({})
    process = pool._all[0].process
    pool.close()
    assert process.exitcode == -signal.SIGTERM
