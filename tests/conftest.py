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

    return ByFile(config, log)


@functools.cache
def _reading_the_synthesized_app() -> frozenset[str]:
    """The test files that use the session's `synthesized` fixture: tests/infra's (its conftest's
    fixtures read it) and any other that names it."""
    tests = Path(__file__).parent
    return frozenset(str(path.relative_to(tests.parent)) for path in tests.rglob("test_*.py")
                     if path.parent.name == "infra" or re.search(r"\bsynthesized\b", path.read_text()))
