"""Fixtures every test folder shares."""

import pytest


@pytest.fixture
def fake_aws_credentials(monkeypatch):
    """What moto's in-process mocks need to sign requests with; never real ones."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SSM"):
        monkeypatch.delenv(name, raising=False)


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite on two workers (pytest-xdist, --dist loadgroup): each test file goes
    to one worker whole, so its module fixtures (a local server, a trained adapter) are built once; the
    files that read the synthesized app go together, so the app is synthesized once."""
    for item in items:
        group = "synthesized-app" if "synthesized" in item.fixturenames else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
