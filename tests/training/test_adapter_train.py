"""`taskrouter adapter train` on the CPU with a tiny random Llama and a tokenizer (tiny_base.py, no hub):
two steps with the real command, the adapter and its manifest saved, the same seed giving the same
weights, then base plus adapter reloaded with peft generating a constrained answer the router's
parser accepts."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from taskrouter.cli import main
from taskrouter.core.prompting import build_prompt
from taskrouter.core.request import Message, Strategy
from taskrouter.core.task_spec import load_task_file
from taskrouter.evaluation.dataset import load_dataset, turns_of

from .tiny_base import DATASET, TASKS_FILE, train_command

torch = pytest.importorskip("torch")  # the training extra; `make test` installs it


def train(base: Path, out: Path, seed: int = 7) -> int:
    return main(train_command(base, out, seed=seed))


def test_train_saves_a_reproducible_adapter_that_routes(tiny_base, tmp_path, capsys):
    first, again, other = tmp_path / "first", tmp_path / "again", tmp_path / "other"
    assert train(tiny_base, first) == 0
    out = capsys.readouterr().out
    assert "after 2 steps" in out
    assert "epoch 1 step 1/2: loss " in out and "epoch 1 step 2/2: loss " in out and " left)" in out  # a log's progress
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json", "adapter.tar.gz"} <= {
        p.name for p in first.iterdir()
    }
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["base_model"]["id"] == str(tiny_base) and manifest["base_model"]["revision"].startswith("sha256:")
    assert manifest["prompt"]["strategy"] == "zero_shot" and manifest["method"] == "lora"
    assert manifest["seed"] == 7 and manifest["hyper_parameters"]["rank"] == 4
    assert manifest["dataset"]["file"] == "example.jsonl" and len(manifest["dataset"]["sha256"]) == 64
    split = manifest["split"]
    assert split["train_examples"] + split["validation_examples"] == len(turns_of(load_dataset(DATASET)))
    assert split["validation_examples"] > 0 and manifest["result"]["steps"] == 2
    with tarfile.open(first / "adapter.tar.gz") as archive:  # SageMaker's artifact: files at the root
        assert sorted(archive.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]

    assert train(tiny_base, again) == 0
    assert (first / "adapter_model.safetensors").read_bytes() == (again / "adapter_model.safetensors").read_bytes()
    assert (first / "adapter.tar.gz").read_bytes() == (again / "adapter.tar.gz").read_bytes()
    assert train(tiny_base, other, seed=8) == 0
    assert (first / "adapter_model.safetensors").read_bytes() != (other / "adapter_model.safetensors").read_bytes()

    # base plus adapter, generating under a constraint to the allowed answers, as the endpoint does
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), first).eval()
    tasks = {task.name: task for task in load_task_file(TASKS_FILE, updated_at="")}
    prompt = build_prompt(Strategy.ZERO_SHOT, [Message(role="user", content="minutes from my acme call pls")], tasks, None)
    text = tokenizer.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    choices = [tokenizer(choice, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for choice in prompt.choices]

    def allowed(_batch: int, generated: torch.Tensor) -> list[int]:  # a trie over the choices' tokens
        so_far = generated[ids.shape[1]:].tolist()
        return sorted({c[len(so_far)] for c in choices if c[: len(so_far)] == so_far and len(c) > len(so_far)}) or [tokenizer.eos_token_id]

    with torch.no_grad():
        output = model.generate(ids, max_new_tokens=prompt.max_answer_tokens, prefix_allowed_tokens_fn=allowed, do_sample=False)
    answer = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)
    decided = prompt.parse(answer)  # raises InvalidOutput if the answer were not an allowed one
    assert decided is None or decided in tasks


def test_a_label_outside_the_task_file_is_refused_in_one_line(tiny_base, tmp_path, capsys):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"tasks": [{"name": "follow_up_email", "description": "e-mails"}]}))
    code = main(["adapter", "train", "--dataset", str(DATASET), "--base-model", str(tiny_base),
                 "--out", str(tmp_path / "out"), "--tasks", str(tasks), "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "are not tasks of the task file" in err and err.count("\n") == 1


def test_a_run_interrupted_and_resumed_from_its_checkpoint_ends_with_the_same_weights(tiny_base, tmp_path, capsys):
    """A managed-spot job is stopped and restarted by SageMaker with its checkpoint folder restored:
    4 steps straight and 2 + 2 resumed agree (3 batches an epoch: the resumed run crosses into the
    second epoch; dropout on)."""

    def run(out: Path, max_steps: int, checkpoints: Path | None) -> int:
        extra = ["--checkpoint-dir", str(checkpoints), "--checkpoint-every", "1"] if checkpoints else []
        return main([
            "adapter", "train", "--dataset", str(DATASET), "--base-model", str(tiny_base), "--out", str(out),
            "--max-steps", str(max_steps), "--epochs", "2", "--seed", "3", "--rank", "4", "--batch-size", "32",
            "--no-archive", *extra,
        ])

    assert run(tmp_path / "straight", 4, None) == 0
    state = tmp_path / "checkpoints"
    assert run(tmp_path / "interrupted", 2, state) == 0 and (state / "training-state.pt").is_file()
    assert run(tmp_path / "resumed", 4, state) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "after step 2" in out and "epoch 1 step 1" not in out.split("resumed from")[1]
    assert (tmp_path / "resumed" / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "straight" / "adapter_model.safetensors"
    ).read_bytes()
    assert (tmp_path / "interrupted" / "adapter_model.safetensors").read_bytes() != (
        tmp_path / "straight" / "adapter_model.safetensors"
    ).read_bytes()
    assert not (tmp_path / "resumed" / "adapter.tar.gz").exists()  # --no-archive: SageMaker archives a job's output
    assert json.loads((tmp_path / "resumed" / "manifest.json").read_text())["result"]["steps"] == 4

    # another run's checkpoint is never resumed silently
    code = main(["adapter", "train", "--dataset", str(DATASET), "--base-model", str(tiny_base),
                 "--out", str(tmp_path / "other"), "--max-steps", "1", "--seed", "4", "--rank", "4",
                 "--batch-size", "32", "--epochs", "2", "--checkpoint-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 1 and "checkpoint of another run" in err
