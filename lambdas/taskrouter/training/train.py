"""`taskrouter adapter train` (docs/training.md): a LoRA adapter that routes, from labelled conversations.

Each user turn of the dataset is one example. Its prompt is the one the router builds for that turn
(`core.prompting.build_prompt`, zero-shot, rendered with the base model's own chat template as the
serving container renders it); its answer is the labelled task or `none`, then the end of the
turn. The loss is on the answer alone. On CUDA the base is loaded in 4 bits (QLoRA, bitsandbytes);
on the CPU in full precision (plain LoRA), where the same dataset, seed and base give the same
weights, byte for byte (on the same CPU type and thread count: float sums depend on their order).

A plain PyTorch loop, not a trainer: the loss mask, the order of the examples and the seeding are a
few lines here, visible and deterministic, and the training extra stays torch + transformers + peft.

Nothing is written to `out` before training has ended well (training/output.py): a run that stops
(a diverged loss, a bad checkpoint or base, Ctrl-C) leaves `out` as it found it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch  # the training extra: imported with the module, so a missing one is told before any work
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from taskrouter.core.prompting import FULL_TRANSCRIPT, TranscriptBound, build_prompt, transcript_bound
from taskrouter.core.request import Message, Strategy
from taskrouter.core.router import allowed_tasks  # the router's own rule, not a copy
from taskrouter.core.tasks import NO_TASK, Task, tasks_sha256
from taskrouter.evaluation.dataset import Turn, load_dataset, turns_of
from taskrouter.model_server.loading import context_tokens, gguf_source
from taskrouter.training.output import ARCHIVE as ADAPTER_ARCHIVE
from taskrouter.training.output import MANIFEST, check_output, staged
from taskrouter.training.progress import progress_for, total_steps

PROMPT_STRATEGY = Strategy.ZERO_SHOT
PROMPT_FORMAT = "chat-messages: core/prompting.py, the base model's chat template"
VALIDATION_SHARE = 10  # one conversation in ten, chosen by its id's digest, is held out
CHECKPOINT_KEYS = {"run", "progress", "epoch_order", "adapter", "optimizer", "torch_rng", "cuda_rng"}
CHECKPOINT_FIX = "delete it to start afresh, or give another --checkpoint-dir"
IGNORED = -100  # the label of a position the loss skips (the prompt, the padding), as transformers has it


class TrainingError(ValueError):
    """A run that cannot go on; the message names the file or option to fix, and how (one line)."""


@dataclass(frozen=True)
class HyperParameters:
    epochs: int = 2
    max_steps: int | None = None  # stops before the epochs end when set
    learning_rate: float = 2e-4
    batch_size: int = 4
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    seed: int = 0
    max_length: int = 32768  # serving.json's OPTION_MAX_MODEL_LEN (a test holds them equal): what the endpoint takes


@dataclass(frozen=True)
class Checkpoints:
    """Where the training state is saved every `every` steps and resumed from: a managed-spot job
    that SageMaker interrupts and restarts finds its last checkpoint there (/opt/ml/checkpoints,
    synced with S3) and goes on, to the same weights as a run that was never interrupted."""

    folder: Path
    every: int = 50

    @property
    def file(self) -> Path:
        return self.folder / "training-state.pt"


@dataclass(frozen=True)
class Example:
    conversation: str
    prompt: list[dict[str, str]]  # the chat messages the router sends for this turn
    answer: str  # the labelled task, or none


def examples_of(turns: list[Turn], tasks: dict[str, Task], transcript: TranscriptBound = FULL_TRANSCRIPT) -> list[Example]:
    """Each turn as the router would prompt it, `tasks` its registry: the tasks the turn's allow-list
    keeps of it (all of them without one), its running task if the registry holds it, and as much of
    the conversation as the router shows the model serving it (`transcript`)."""
    made = []
    for turn in turns:
        conversation = [Message(role=m["role"], content=m["content"]) for m in turn.messages]
        current = turn.current_task if turn.current_task in tasks else None
        allowed, _ = allowed_tasks(tasks, None if turn.tasks is None else list(turn.tasks))
        prompt = build_prompt(PROMPT_STRATEGY, conversation, allowed, current, transcript)
        made.append(Example(turn.conversation, prompt.messages(), turn.expected.task or NO_TASK))
    return made


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """Train and validation, by conversation (a conversation's turns stay together), stable across
    runs and machines: a conversation is held out when its id's SHA-256 is 0 modulo VALIDATION_SHARE."""

    def held_out(example: Example) -> bool:
        return int(hashlib.sha256(example.conversation.encode()).hexdigest(), 16) % VALIDATION_SHARE == 0

    return [e for e in examples if not held_out(e)], [e for e in examples if held_out(e)]


def train(
    dataset: Path,
    tasks: list[Task],
    base_model: str,
    out: Path,
    hyper: HyperParameters,
    *,
    revision: str | None = None,
    checkpoints: Checkpoints | None = None,
    archive: bool = True,
    force: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Train, save the adapter, its manifest and (unless `archive` is off: a SageMaker job's output
    is archived by SageMaker) its archive in `out`, replacing an adapter there only when `force`;
    the manifest."""
    check_output(out, force=force)
    if checkpoints is not None and checkpoints.folder.exists() and not checkpoints.folder.is_dir():
        raise TrainingError(f"--checkpoint-dir {checkpoints.folder} is a file, not a folder: give a folder")
    _seed_everything(hyper.seed)
    turns = turns_of(load_dataset(dataset))
    catalogue = {task.name: task for task in tasks}
    unknown = sorted({t.expected.task for t in turns if t.expected.task and t.expected.task not in catalogue})
    if unknown:
        raise TrainingError(f"{dataset.name}: labels {unknown} are not tasks of the task file")
    if not split(examples_of(turns, catalogue))[0]:  # told before the base loads
        raise TrainingError(f"{dataset.name}: no training example once the validation share is held out")

    cuda = torch.cuda.is_available()
    tokenizer, model = _load_base(base_model, revision, cuda)
    # The router shows a model as much of the conversation as its context leaves room for (a small
    # one less): the adapter is trained on the transcript it will be served with.
    transcript = transcript_bound(context_tokens(model.config))
    training, validation = split(examples_of(turns, catalogue, transcript))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cuda:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    model = get_peft_model(
        model,
        LoraConfig(
            r=hyper.rank, lora_alpha=hyper.alpha, lora_dropout=hyper.dropout, task_type="CAUSAL_LM",
            target_modules="all-linear",
        ),
    )
    device = next(model.parameters()).device
    encoded = [e for e in (_encode(tokenizer, example, hyper.max_length) for example in training) if e]
    held_out = [e for e in (_encode(tokenizer, example, hyper.max_length) for example in validation) if e]
    too_long = len(training) + len(validation) - len(encoded) - len(held_out)
    if not encoded:
        raise TrainingError(f"{dataset.name}: every training example is over {hyper.max_length} tokens")

    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=hyper.learning_rate)
    order = random.Random(hyper.seed)
    # What a checkpoint must share with this run to be resumed (max_steps aside: a later stop is fine).
    run = {"hyper_parameters": {**asdict(hyper), "max_steps": None}, "tasks_sha256": tasks_sha256(tasks),
           "method": "qlora" if cuda else "lora", "dataset_sha256": hashlib.sha256(dataset.read_bytes()).hexdigest(),
           "base_model": base_model, "revision": revision}
    progress = {"steps": 0, "epoch": 0, "next_batch": 0, "losses": []}
    if checkpoints is not None and checkpoints.file.is_file():
        progress = _resume(checkpoints.file, run, model, optimizer, order)
        if hyper.max_steps is not None and progress["steps"] > hyper.max_steps:
            raise TrainingError(f"{checkpoints.file} is past step {hyper.max_steps} already ({progress['steps']}): "
                                "raise --max-steps or give another --checkpoint-dir")
        log(f"resumed from {checkpoints.file} after step {progress['steps']}")
    steps, losses, started = progress["steps"], progress["losses"], time.monotonic()
    shown = progress_for(total_steps(len(encoded), hyper.batch_size, hyper.epochs, hyper.max_steps), steps, log)
    model.train()
    for epoch in range(progress["epoch"], hyper.epochs):
        epoch_order = order.getstate()  # what a resumed run replays this epoch's shuffle from
        indices = list(range(len(encoded)))
        order.shuffle(indices)
        first_batch = progress["next_batch"] if epoch == progress["epoch"] else 0
        for batch_number, first in enumerate(range(0, len(indices), hyper.batch_size)):
            if batch_number < first_batch:
                continue
            if hyper.max_steps is not None and steps >= hyper.max_steps:
                break
            batch = _batch([encoded[i] for i in indices[first : first + hyper.batch_size]], tokenizer.pad_token_id, device)
            loss = answer_loss(model, batch)
            value = loss.item()
            if not math.isfinite(value):  # told before the step: nothing diverged is saved or checkpointed
                raise _not_finite(f"the training loss is {value} at step {steps + 1}", steps > 0, base_model, hyper)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            if not torch.stack([torch.isfinite(p).all() for p in trained]).all():  # a finite loss, then a step too far
                raise _not_finite(f"the adapter's weights are not finite after step {steps}", True, base_model, hyper)
            losses.append(value)
            shown.step(epoch + 1, steps, value)
            if checkpoints is not None and steps % checkpoints.every == 0:
                at = {"steps": steps, "epoch": epoch, "next_batch": batch_number + 1, "losses": losses}
                _save_state(checkpoints.file, run, at, epoch_order, model, optimizer)
    shown.close()
    validation_loss = _mean_loss(model, held_out, tokenizer.pad_token_id, device, hyper.batch_size)
    if validation_loss is not None and not math.isfinite(validation_loss):
        raise _not_finite(f"the validation loss is {validation_loss}", steps > 0, base_model, hyper)

    manifest = {
        "base_model": {"id": base_model, "revision": revision or _resolved_revision(model, Path(base_model))},
        "prompt": {"strategy": PROMPT_STRATEGY.value, "format": PROMPT_FORMAT, "answer": "task name or none, then EOS",
                   "transcript": {"max_bytes": transcript.max_bytes, "max_messages": transcript.max_messages}},
        "method": "qlora" if cuda else "lora",
        "hyper_parameters": asdict(hyper),
        "seed": hyper.seed,
        "dataset": {"file": dataset.name, "sha256": hashlib.sha256(dataset.read_bytes()).hexdigest()},
        "tasks": {"names": sorted(catalogue), "sha256": tasks_sha256(tasks)},  # the prompts embed their text
        "split": {
            "rule": f"a conversation is held out when sha256(id) % {VALIDATION_SHARE} == 0",
            "train_examples": len(training),
            "validation_examples": len(validation),
            "skipped_over_max_length": too_long,
        },
        "result": {
            "steps": steps,
            "final_train_loss": losses[-1] if losses else None,
            "validation_loss": validation_loss,
            "seconds": round(time.monotonic() - started, 1),
            "device": str(device),
        },
        "archive": ADAPTER_ARCHIVE if archive else None,
    }
    with staged(out) as folder:
        model.save_pretrained(folder)
        if archive:
            _archive(folder)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    return manifest


def _not_finite(what: str, updated: bool, base_model: str, hyper: HyperParameters) -> TrainingError:
    """Why a loss or weight is nan or infinite, and the fix: before any update, the base model's
    own weights; after, a learning rate too high for them."""
    if not updated:
        return TrainingError(f"{what}, before any update: the base model {base_model} gives non-finite outputs "
                             "(a corrupt or badly converted weight?): check or download it again; no adapter written")
    return TrainingError(f"{what}: training diverged: lower --learning-rate (now {hyper.learning_rate:g}) "
                         "or check the base model's weights; no adapter written")


def _save_state(file: Path, run: dict, progress: dict, epoch_order: Any, model: Any, optimizer: Any) -> None:
    """Everything a resumed run needs to continue as if never stopped (CHECKPOINT_KEYS), written whole
    or not at all (an interruption mid-write leaves the previous checkpoint)."""
    state = {
        "run": run,
        "progress": progress,
        "epoch_order": epoch_order,
        "adapter": get_peft_model_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, file)


def _resume(file: Path, run: dict, model: Any, optimizer: Any, order: random.Random) -> dict:
    state = _load_state(file)
    if state["run"] != run:
        raise TrainingError(f"{file} is the checkpoint of another run (hyper-parameters, dataset or base differ): "
                            "give this run its own --checkpoint-dir")
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    order.setstate(state["epoch_order"])
    return state["progress"]


def _load_state(file: Path) -> dict:
    """The checkpoint in `file`, or an error saying what is wrong with it: empty, cut short, or not
    one that `_save_state` wrote."""
    if file.stat().st_size == 0:
        raise TrainingError(f"{file} is empty (a copy or sync cut short?): {CHECKPOINT_FIX}")
    with open(file, "rb") as opened:  # a file that cannot be opened is told as such, by the OSError
        try:
            # weights_only: tensors and plain containers, never arbitrary objects (another job could
            # have written under training/, which every job's role may write)
            state = torch.load(opened, weights_only=True)
        except Exception:  # whatever torch makes of a cut zip (an OSError too) or a foreign pickle
            raise TrainingError(f"{file} is not a readable checkpoint (truncated, or another program's file): "
                                f"{CHECKPOINT_FIX}") from None
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
        raise TrainingError(f"{file} is not a checkpoint of taskrouter adapter train: {CHECKPOINT_FIX}")
    return state


def _seed_everything(seed: int) -> None:
    import numpy

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _load_base(base_model: str, revision: str | None, cuda: bool) -> tuple[Any, Any]:
    """The base's tokenizer and model, or an error naming what to fix: a local folder's config.json
    first (the file a hand edit or a cut-short copy breaks; transformers tells it in a handful of
    exception types, some over several lines), then anything else that keeps the base from loading."""
    folder = Path(base_model)
    if not folder.exists() and (folder.is_absolute() or base_model.startswith(".")):  # not a hub id
        raise TrainingError(f"--base-model {base_model}: no such folder: give a model's folder, or a hub id")
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            raise TrainingError(f"--base-model {folder} has no config.json: give a model's folder as the hub "
                                "has it (config.json, weights, tokenizer)")
        try:
            AutoConfig.from_pretrained(folder)
        except Exception as error:
            raise TrainingError(f"{config} is not a model configuration transformers reads ({_gist(error)}): "
                                "restore it from the model's source") from None
    source, keywords = gguf_source(folder) or (base_model, {})
    if keywords:  # gguf's absence named here, before transformers logs its own install advice
        import gguf as _gguf  # noqa: F401
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, **keywords)
        return tokenizer, AutoModelForCausalLM.from_pretrained(source, revision=revision, **keywords, **_loading(cuda))
    except ImportError:  # a missing extra (bitsandbytes on a GPU), told as such by the command
        raise
    except Exception as error:
        raise TrainingError(f"--base-model {base_model} does not load ({_gist(error)}): give a causal language "
                            "model's folder or hub id, with its weights and tokenizer") from None


def _gist(error: Exception) -> str:
    """An error's first paragraph, on one line (transformers' go on with advice that does not apply)."""
    return " ".join(str(error).split("\n\n")[0].split()) or type(error).__name__


def _loading(cuda: bool) -> dict[str, Any]:
    if not cuda:
        return {"dtype": torch.float32}
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        ),
        "dtype": torch.bfloat16,
        "device_map": {"": 0},
    }


def _encode(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids and labels: the prompt as the serving container renders it (the chat template, then
    the assistant's turn opened), masked out of the loss; the answer and the end of the turn, learnt.
    None for an example longer than the endpoint takes (counted in the manifest, not trained on)."""
    prompt = tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(example.answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(answer_ids) > max_length:
        return None
    return prompt_ids + answer_ids, [IGNORED] * len(prompt_ids) + answer_ids


def _batch(items: list[tuple[list[int], list[int]]], pad: int, device: Any) -> dict[str, Any]:
    width = max(len(ids) for ids, _ in items)
    ids = [i + [pad] * (width - len(i)) for i, _ in items]
    labels = [l + [IGNORED] * (width - len(l)) for _, l in items]
    mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in items]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


# Config fields of models whose forward transforms the head's logits (soft-capping, scaling, a padded
# vocabulary cut): those are trained through their own forward, full logits and all.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logits_scaling", "logit_scale", "unpadded_vocab_size")


def answer_loss(model: Any, batch: dict[str, Any]) -> Any:
    """`model(**batch).loss` (the mean cross-entropy over the shifted labels) with the LM head applied
    only to the positions whose next token is labelled: the answer and the end of the turn. The full
    logits (positions x vocabulary, upcast to float32, and as much again for their gradient) are what
    a long prompt's step would otherwise spend its memory on (model_artifacts/README.md, "Training memory")."""
    causal_lm = model.get_base_model()  # the PEFT-wrapped model, its LoRA layers in place
    config = causal_lm.config.get_text_config()
    if any(getattr(config, field, None) is not None for field in LOGIT_TRANSFORMS):
        return model(**batch).loss
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    learnt = targets != IGNORED
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][learnt])
    return torch.nn.functional.cross_entropy(logits.float(), targets[learnt])


def _mean_loss(model: Any, encoded: list, pad: int, device: Any, batch_size: int) -> float | None:
    if not encoded:
        return None
    model.eval()
    losses = []
    with torch.no_grad():
        for first in range(0, len(encoded), batch_size):
            losses.append(float(answer_loss(model, _batch(encoded[first : first + batch_size], pad, device))))
    model.train()
    return sum(losses) / len(losses)


def _archive(out: Path) -> None:
    """`adapter.tar.gz` beside the adapter: its two files at the archive's root, as SageMaker wants an
    adapter artifact; the same files give the same bytes (no time, owner or order in it)."""
    import gzip
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            data = (out / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            archive.addfile(info, io.BytesIO(data))
    with open(out / ADAPTER_ARCHIVE, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as packed:
        packed.write(buffer.getvalue())


def _resolved_revision(model: Any, path: Path) -> str:
    """The base's revision when none was given: the commit the hub resolved, or a local folder's
    files' (a GGUF file's) digest."""
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        return commit
    if path.is_file():
        return f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    if not path.is_dir():
        return "unknown"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file.read_bytes())
    return f"sha256:{digest.hexdigest()}"
