"""Where the tools find the repository's own files (never used in a Lambda, never in its bundle)."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path

from taskrouter.adapters.settings import SERVING_MAX_TOKENS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TASKS_FILE = ROOT / "tasks" / "default_tasks.json"  # the default task list a new registry starts with
SERVING_FILE = ROOT / "model_artifacts" / "serving.json"  # the endpoint's engine settings


def serving_max_tokens() -> int:
    """The endpoint's serving length (OPTION_MAX_MODEL_LEN), which bounds the task catalogue."""
    return int(json.loads(SERVING_FILE.read_text())["options"]["OPTION_MAX_MODEL_LEN"])


def set_serving_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Tools run with the serving length a stage deploys (the stack sets it on its functions), so a
    local router and registry bound the catalogue as a deployed stage does; the user's value wins."""
    environ.setdefault(SERVING_MAX_TOKENS, str(serving_max_tokens()))
