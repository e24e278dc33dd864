"""The OpenAI key: read at start-up, re-read in the background, never waited on by a request."""

import threading

import pytest

from taskrouter.adapters.refreshed_secret import RefreshedSecret
from tests.unit.fakes import Clock


class Secrets:
    def __init__(self):
        self.value, self.reads, self.fail = "sk-1", 0, False
        self.gate = threading.Event()
        self.gate.set()

    def read(self):
        self.gate.wait(5)
        self.reads += 1
        if self.fail:
            raise ConnectionError("secrets manager down")
        return self.value


def test_a_stale_key_is_served_while_the_new_one_is_read_in_the_background():
    clock, secrets = Clock(), Secrets()
    key = RefreshedSecret(secrets.read, max_age_s=300, clock=clock)
    assert key() == "sk-1" and secrets.reads == 1
    secrets.value, clock.now = "sk-2", 300
    secrets.gate.clear()  # Secrets Manager hangs: the request must not wait for it
    assert key() == "sk-1"
    assert key() == "sk-1" and secrets.reads == 1  # one re-read in flight at a time
    secrets.gate.set()
    for _ in range(500):
        if key() == "sk-2":
            break
        threading.Event().wait(0.01)
    assert key() == "sk-2" and secrets.reads == 2


def test_a_failed_re_read_keeps_the_key_held_and_tries_again_later():
    clock, secrets = Clock(), Secrets()
    key = RefreshedSecret(secrets.read, max_age_s=300, retry_after_failure_s=10, clock=clock)
    key()
    secrets.fail, clock.now = True, 300
    assert key() == "sk-1"
    for _ in range(500):
        if secrets.reads == 2:
            break
        threading.Event().wait(0.01)
    clock.now = 305
    assert key() == "sk-1" and secrets.reads == 2  # no re-read before the retry delay
    secrets.fail, secrets.value, clock.now = False, "sk-3", 310
    key()
    for _ in range(500):
        if key() == "sk-3":
            break
        threading.Event().wait(0.01)
    assert key() == "sk-3"


def test_with_no_key_held_the_caller_reads_and_sees_the_failure():
    secrets = Secrets()
    secrets.fail = True
    key = RefreshedSecret(secrets.read, max_age_s=300, clock=Clock())
    with pytest.raises(ConnectionError):
        key()
    secrets.fail = False
    assert key() == "sk-1"
