"""A base model folder for training tests, built here with no hub: a 2-layer random Llama and a
byte-level BPE tokenizer trained on the task list and the example dataset, with a ChatML template;
and the command line that trains a small adapter on it in seconds."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "datasets" / "example.jsonl"
TASKS_FILE = ROOT / "tasks" / "default_tasks.json"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_base(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [TASKS_FILE.read_text(), DATASET.read_text()] * 3
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_command(base: Path, out: Path, *options: str, seed: int = 7) -> list[str]:
    """`taskrouter adapter train` for two steps of a rank-4 adapter, with `options` added."""
    return [
        "adapter", "train", "--dataset", str(DATASET), "--base-model", str(base), "--out", str(out),
        "--max-steps", "2", "--epochs", "1", "--seed", str(seed), "--rank", "4", "--batch-size", "2", *options,
    ]
