"""make local reads the served model's context and tokenizer (local/served_model.py) in its own process,
with the hub's offline switches set first, as the model server does: nothing leaves the machine."""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("transformers")


def test_reading_the_served_model_sets_the_hub_offline_before_the_hub_is_imported(tiny_base, tmp_path):
    code = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.pop(name, None)
        from taskrouter.local.served_model import served_model
        assert "huggingface_hub" not in sys.modules
        served = served_model(Path({str(tiny_base)!r}), Path({str(tmp_path / "cache")!r}))
        import huggingface_hub.constants as hub
        print(served.context_tokens, hub.HF_HUB_OFFLINE)
    """)
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == ["8192", "True"]
