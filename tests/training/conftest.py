"""The tiny base model every training test trains on, built once per session."""

from pathlib import Path

import pytest

from .tiny_base import build_tiny_base


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    pytest.importorskip("torch")  # the training extra; `make test` installs it
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"))
