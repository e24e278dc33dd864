"""Fixtures every test folder shares."""

import pytest


@pytest.fixture
def fake_aws_credentials(monkeypatch):
    """What moto's in-process mocks need to sign requests with; never real ones."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SSM"):
        monkeypatch.delenv(name, raising=False)
