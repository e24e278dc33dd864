"""Where the tools find the repository's own files (never used in a Lambda, never in its bundle)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from taskrouter.adapters.settings import SERVING_MAX_TOKENS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TASKS_FILE = ROOT / "tasks" / "default_tasks.json"  # the default task list a new registry starts with
SERVING_FILE = ROOT / "model_artifacts" / "serving.json"  # the endpoint's engine settings
DEFAULT_STATE_DIR = ROOT / ".local"  # make local's state (TASKROUTER_LOCAL_DIR)
LOCAL_MODEL = "TASKROUTER_LOCAL_MODEL"  # the model make local serves (docs/local-model.md)


def serving_max_tokens() -> int:
    """The endpoint's serving length (OPTION_MAX_MODEL_LEN), which bounds the task catalogue."""
    return int(json.loads(SERVING_FILE.read_text())["options"]["OPTION_MAX_MODEL_LEN"])


def local_state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where make local keeps its state: TASKROUTER_LOCAL_DIR, else .local/ in the repository."""
    return Path(environ.get("TASKROUTER_LOCAL_DIR") or DEFAULT_STATE_DIR)


def set_serving_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Tools run with the serving length a stage deploys (the stack sets it on its functions), so a
    local router and registry bound the catalogue as a deployed stage does; the user's value wins.

    With TASKROUTER_LOCAL_MODEL, the model make local serves, the serving length and the tokenizer
    the catalogue is counted with are that model's, whatever else is set: its prompts must fit its
    context. A model that cannot be read raises ValueError (one line)."""
    model = environ.get(LOCAL_MODEL)
    if model:
        from taskrouter.local.served_model import served_model

        served = served_model(Path(model).expanduser(), local_state_dir(environ) / "served-models")
        environ.update(served.environment())
        return
    environ.setdefault(SERVING_MAX_TOKENS, str(serving_max_tokens()))
