"""Fixtures every test folder shares, and how `make test` spreads the files over its workers."""

import functools
import re
from pathlib import Path

import pytest


@pytest.fixture
def fake_aws_credentials(monkeypatch):
    """What moto's in-process mocks need to sign requests with; never real ones."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SSM"):
        monkeypatch.delenv(name, raising=False)


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs the suite on two workers (pytest-xdist): each test file goes to one worker whole,
    so its module fixtures (a local server, a trained adapter) are built once, and the files that read
    the synthesized app go to one worker together, so the app is synthesized once. (Scheduled here
    rather than with xdist_group marks: xdist 3.8 writes those into an attribute pytest 9 no longer
    reads, so --dist loadgroup splits every file test by test.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "synthesized-app" if path in _reading_the_synthesized_app() else path

    config.option.loadscopereorder = False  # the files go out in the collection's order: the longest first
    return ByFile(config, log)


# The files that take longest (a real model, make local's servers, many moto stacks), handed out first so
# that neither worker starts one while the other is about to run out of work; measured with
# `pytest -n 2 --junitxml` (each file's summed time), the longest first. The rest keep their order.
LONGEST_FIRST = (
    "tests/integration/test_real_model.py", "tests/integration/test_local_server.py", "tests/integration/test_doctor.py",
    "tests/unit/test_served_model_budget.py", "tests/integration/test_router_handler.py",
    "tests/training/test_adapter_launch.py", "tests/integration/test_alarm_handler.py",
    "tests/training/test_adapter_train.py", "tests/integration/test_local_first_try.py",
    "tests/integration/test_openapi_fuzz.py",
)


def pytest_collection_modifyitems(config, items):
    """Every worker collects in this order, and make test's scheduler hands the files out in it."""
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        if path in _reading_the_synthesized_app():
            return 0  # the synthesized app's files, together (infra: the largest share)
        return 1 + LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST) + 1

    items.sort(key=rank)  # stable: each file's tests keep their order


@functools.cache
def _reading_the_synthesized_app() -> frozenset[str]:
    """The test files that use the session's `synthesized` fixture: tests/infra's (its conftest's
    fixtures read it) and any other that names it."""
    tests = Path(__file__).parent
    return frozenset(str(path.relative_to(tests.parent)) for path in tests.rglob("test_*.py")
                     if path.parent.name == "infra" or re.search(r"\bsynthesized\b", path.read_text()))
