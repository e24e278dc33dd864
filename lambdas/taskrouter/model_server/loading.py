"""A model folder or GGUF file, loaded once for the CPU, and the LoRA adapters it serves by name.

From local files only, never a hub: each load is `local_files_only`, folders are made absolute first
(a relative name that does not resolve would be taken as a hub id), and an adapter folder must hold
its config and its weights before anything loads (peft asks the hub for weights a folder lacks). The
server's process also runs with the hub's offline switches set (cli.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

GGUF_SUFFIX = ".gguf"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # peft's names, the first preferred
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class ModelLoadError(ValueError):
    """A model or adapter that cannot be served; the message names it and the fix (one line)."""


def gguf_source(model: Path) -> tuple[str, dict[str, Any]] | None:
    """For a GGUF file (llama.cpp's format), `from_pretrained`'s first argument and keywords: its
    folder and `gguf_file=` its name (transformers de-quantizes it with the `gguf` package); else None."""
    if model.is_file() and model.suffix.lower() == GGUF_SUFFIX:
        return str(model.parent), {"gguf_file": model.name}
    return None


def pretrained_source(model: Path) -> tuple[str, dict[str, Any]]:
    """`from_pretrained`'s first argument and keywords for a model folder or a GGUF file."""
    if model.is_dir():
        if not (model / "config.json").is_file():
            raise ModelLoadError(f"{model} has no config.json: give a model's folder (config.json, weights, tokenizer)")
        return str(model), {}
    if (gguf := gguf_source(model)) is not None:
        return gguf
    if model.exists():
        raise ModelLoadError(f"{model} is neither a model folder nor a {GGUF_SUFFIX} file")
    raise ModelLoadError(f"{model}: no such file or folder")


def context_tokens(config: Any) -> int:
    """The context a model of this config is served with (vLLM's default max_model_len: the config's);
    the catalogue's budget (make local) and `adapter train`'s transcript bound read the same."""
    return int(getattr(config, "max_position_embeddings", 0) or 2048)


@dataclass
class LoadedModel:
    path: Path
    tokenizer: Any
    model: Any  # peft's PeftModel when adapters are served, else the transformers model
    adapters: tuple[str, ...]
    dtype: torch.dtype

    @property
    def max_model_len(self) -> int:
        return context_tokens(self.base_config)

    @property
    def base_config(self) -> Any:
        return self.model.config if not self.adapters else self.model.get_base_model().config

    @property
    def vocab_size(self) -> int:
        """The width of the logits (the config's vocabulary, padding included)."""
        return int(self.base_config.vocab_size)

    @contextmanager
    def serving(self, adapter: str | None) -> Iterator[None]:
        """The model as `adapter` (a name of `adapters`), or the base alone (None)."""
        if not self.adapters:
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield


def load(model: Path, adapters: Mapping[str, Path], dtype: torch.dtype = torch.float32) -> LoadedModel:
    """The tokenizer and the model in `dtype` for the CPU, from local files only (never a hub), with
    each adapter loaded under its name."""
    transformers_logging.set_verbosity_error()  # its notes on generation config and GGUF are not the user's
    transformers_logging.disable_progress_bar()
    model = model.expanduser().absolute()
    source, keywords = pretrained_source(model)
    adapters = {name: folder.expanduser().absolute() for name, folder in adapters.items()}
    for name, folder in adapters.items():
        check_adapter(name, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **keywords)
        loaded = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, dtype=dtype, **keywords)
    except ImportError:
        raise
    except Exception as error:
        raise ModelLoadError(f"{model} does not load as a causal language model ({_gist(error)})") from None
    loaded.eval()
    if adapters:
        loaded = _with_adapters(loaded, adapters)
    return LoadedModel(model, tokenizer, loaded, tuple(adapters), dtype)


def check_adapter(name: str, folder: Path) -> None:
    """Refuses, in one line naming what is missing, a folder that is not a whole adapter."""
    if not folder.is_dir():
        raise ModelLoadError(f"adapter {name}: {folder} is not a folder (give the folder `taskrouter adapter train "
                             "--out` wrote)")
    missing = [] if (folder / ADAPTER_CONFIG).is_file() else [ADAPTER_CONFIG]
    if not any((folder / weights).is_file() for weights in ADAPTER_WEIGHTS):
        missing.append(" or ".join(ADAPTER_WEIGHTS))
    if missing:
        raise ModelLoadError(f"adapter {name}: {folder} has no {' and no '.join(missing)}: not a whole adapter (an "
                             "interrupted training?); give the folder `taskrouter adapter train --out` wrote")


def _with_adapters(model: Any, adapters: Mapping[str, Path]) -> Any:
    from peft import PeftModel

    served = None
    for name, folder in adapters.items():
        try:
            if served is None:
                served = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False,
                                                   local_files_only=True)
            else:
                served.load_adapter(str(folder), adapter_name=name, is_trainable=False, local_files_only=True)
        except Exception as error:
            raise ModelLoadError(f"adapter {name} ({folder}) does not load on this base ({_gist(error)})") from None
    served.eval()
    return served


def _gist(error: Exception) -> str:
    return " ".join(str(error).split("\n\n")[0].split()) or type(error).__name__
