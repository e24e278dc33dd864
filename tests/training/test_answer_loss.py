"""The training loss computes only what it needs: the LM head on the positions whose next token is
labelled (the answer and the end of the turn), giving the loss and gradients the model's own
full-logits loss gives, on the tiny base with a LoRA adapter as `adapter train` wraps it."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskrouter.core.task_spec import load_task_file
from taskrouter.evaluation.dataset import load_dataset, turns_of
from taskrouter.training.train import IGNORED, _batch, _encode, answer_loss, examples_of

from .tiny_base import DATASET, TASKS_FILE

torch = pytest.importorskip("torch")  # the training extra; `make test` installs it


@pytest.fixture(scope="module")
def wrapped(tiny_base: Path):
    """The tiny base with a rank-4 LoRA on every linear layer, its B matrices made non-zero (a fresh
    adapter's are zero, which would leave their gradients' agreement untested), and a batch of three
    real prompts of different lengths (padding)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules="all-linear"),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    tasks = {task.name: task for task in load_task_file(TASKS_FILE, updated_at="")}
    examples = examples_of(turns_of(load_dataset(DATASET)), tasks)[:3]
    batch = _batch([_encode(tokenizer, example, 32768) for example in examples], tokenizer.pad_token_id, "cpu")
    assert len({int(row.sum()) for row in batch["attention_mask"]}) > 1  # padded rows among them
    return model, batch


def loss_and_gradients(model, compute) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_the_answer_only_loss_equals_the_full_logits_loss_and_its_gradients(wrapped):
    model, batch = wrapped
    full, full_gradients = loss_and_gradients(model, lambda: model(**batch).loss)
    answer, answer_gradients = loss_and_gradients(model, lambda: answer_loss(model, batch))
    assert answer == pytest.approx(full, rel=1e-6, abs=0)
    assert full_gradients.keys() == answer_gradients.keys() and full_gradients
    for name, gradient in full_gradients.items():
        torch.testing.assert_close(answer_gradients[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def head_inputs(model, *calls) -> list[tuple[int, ...]]:
    """The shape of what the LM head was given, a call each."""
    shapes: list[tuple[int, ...]] = []
    head = model.get_base_model().get_output_embeddings()
    hook = head.register_forward_hook(lambda _module, inputs, _output: shapes.append(tuple(inputs[0].shape)))
    try:
        with torch.no_grad():
            for call in calls:
                call()
    finally:
        hook.remove()
    return shapes


def test_the_head_sees_the_labelled_positions_only(wrapped):
    model, batch = wrapped
    hidden = model.get_base_model().config.hidden_size
    labelled = int((batch["labels"][:, 1:] != IGNORED).sum())  # answer tokens and end of turn, every row
    width = batch["input_ids"].shape[1]
    assert head_inputs(model, lambda: answer_loss(model, batch), lambda: model(**batch)) == [
        (labelled, hidden), (3, width, hidden),  # the full-logits forward, for contrast
    ]
    assert labelled < width // 20


def test_a_model_that_transforms_its_logits_trains_through_its_own_forward(wrapped, monkeypatch):
    model, batch = wrapped  # soft-capping, say: the head's output alone would not be the model's logits
    monkeypatch.setattr(model.get_base_model().config, "final_logit_softcapping", 30.0, raising=False)
    hidden = model.get_base_model().config.hidden_size
    assert head_inputs(model, lambda: answer_loss(model, batch)) == [(*batch["input_ids"].shape, hidden)]
