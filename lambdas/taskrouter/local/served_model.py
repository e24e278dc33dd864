"""What the catalogue budget needs of the model `make local` serves (TASKROUTER_LOCAL_MODEL): its context
as the model server takes it (`LoadedModel.max_model_len`: the config's, from a folder's config.json or
a GGUF's metadata) and its tokenizer, saved as the `tokenizer.json` that the router and the registry
count tokens with (adapters/served_tokenizer.py).

Both are read without loading weights and kept under the state folder, keyed by the model's files
(path, size, time), so a restart or a `taskrouter` command reads them in milliseconds; the first read
takes seconds (transformers' import, a GGUF's vocabulary).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskrouter.adapters.settings import SERVING_MAX_TOKENS, SERVING_TOKENIZER

_FACTS = "served.json"
_TOKENIZER = "tokenizer.json"


@dataclass(frozen=True)
class ServedModel:
    context_tokens: int
    tokenizer_file: Path

    def environment(self) -> dict[str, str]:
        """The settings that make the router and the registry budget the catalogue for this model."""
        return {SERVING_MAX_TOKENS: str(self.context_tokens), SERVING_TOKENIZER: str(self.tokenizer_file)}


def served_model(model: Path, cache_dir: Path) -> ServedModel:
    """The model's context and tokenizer file, read once per version of its files; a model that cannot
    be read raises ValueError (the model server's own `ModelLoadError` once read), naming it (one line)."""
    folder = cache_dir / _fingerprint(model)
    if not (folder / _FACTS).is_file():
        _extract(model, folder)
    facts = json.loads((folder / _FACTS).read_text())
    return ServedModel(int(facts["context_tokens"]), folder / _TOKENIZER)


def _fingerprint(model: Path) -> str:
    if not model.exists():
        raise ValueError(f"{model}: no such file or folder")
    files = sorted(path for path in model.iterdir() if path.is_file()) if model.is_dir() else [model]
    digest = hashlib.sha256(str(model.resolve()).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _extract(model: Path, folder: Path) -> None:
    """Write the model's facts and tokenizer into `folder`, whole or not at all (a concurrent start
    that wrote them first wins)."""
    context, tokenizer = _read(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        tokenizer.save(str(staging / _TOKENIZER))
        (staging / _FACTS).write_text(json.dumps({"model": str(model), "context_tokens": context}) + "\n")
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / _FACTS).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read(model: Path) -> tuple[int, Any]:
    """The context (the model server's rule, applied to the config alone) and the fast tokenizer, with
    the hub's offline switches set first, as the model server sets them: nothing leaves the machine."""
    from taskrouter.model_server.cli import OFFLINE

    os.environ.update(OFFLINE)  # read when huggingface_hub is imported, which transformers' import does
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from taskrouter.model_server.loading import ModelLoadError, context_tokens, pretrained_source

    transformers_logging.set_verbosity_error()  # its notes on GGUF conversion are not the user's
    source, keywords = pretrained_source(model)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True, **keywords)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **keywords)
    except Exception as error:
        gist = " ".join(str(error).split()) or type(error).__name__
        raise ModelLoadError(f"{model}: its config or tokenizer does not load ({gist[:300]})") from None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelLoadError(f"{model}: its tokenizer is not a fast one (tokenizer.json), which the task "
                             "catalogue's budget counts tokens with")
    return context_tokens(config), backend
