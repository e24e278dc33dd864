"""Chat templates a text backend renders a prompt with; the adapter's manifest names its own."""

from __future__ import annotations

from taskrouter.core.prompting import RoutingPrompt

_TEMPLATES = {
    "chatml": (
        "<|im_start|>system\n{system}<|im_end|>\n"
        "<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": "<s>[INST] {system}\n\n{user} [/INST]",
}

PROMPT_FORMATS = tuple(sorted(_TEMPLATES))


def render(prompt_format: str, prompt: RoutingPrompt) -> str:
    """The prompt as one string in the model's chat template (content is already escaped)."""
    try:
        template = _TEMPLATES[prompt_format]
    except KeyError:
        raise ValueError(f"unknown prompt format {prompt_format!r}; known: {PROMPT_FORMATS}") from None
    return template.format(system=f"{prompt.instructions}\n\n{prompt.answer_format}", user=prompt.transcript)
