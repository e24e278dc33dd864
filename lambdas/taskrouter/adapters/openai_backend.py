"""The fallback: a hosted OpenAI model (or any OpenAI-compatible server) with structured output."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from taskrouter.core.backends import BackendError, BackendThrottled, BackendTimeout
from taskrouter.core.prompting import InvalidOutput, RoutingPrompt

_ANSWER_FORMAT = 'Answer with a JSON object {"task": <an allowed task name or none>}.'


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, api_key: Callable[[], str | None]) -> None:
        self._model = model
        self._api_key = api_key  # None: the client reads OPENAI_API_KEY (local mode only)
        self._client: Any = None
        self._client_key: str | None = None

    def _openai(self) -> Any:
        # The openai package takes ~0.3 s to import: only containers that fall back pay for it.
        import openai

        key = self._api_key()  # cached by its reader; a rotated key gets a new client
        if self._client is None or key != self._client_key:
            self._client = openai.OpenAI(api_key=key, max_retries=0)  # each call sets its timeout
            self._client_key = key
        return self._client

    def decide(self, prompt: RoutingPrompt, timeout_s: float) -> str | None:
        import openai

        try:
            client = self._openai()
        except Exception as error:  # the key's secret unreadable, or no key at all: no answer from here
            raise BackendError(f"openai client unavailable: {type(error).__name__}") from None
        try:
            completion = client.chat.completions.create(
                model=self._model,
                messages=[
                    {"role": "system", "content": f"{prompt.instructions}\n\n{_ANSWER_FORMAT}"},
                    {"role": "user", "content": prompt.transcript},
                ],
                response_format=_schema(prompt.choices),
                temperature=0,
                max_completion_tokens=64,
                timeout=timeout_s,
            )
        except openai.APITimeoutError:
            raise BackendTimeout("openai timeout") from None
        except openai.RateLimitError:
            raise BackendThrottled("openai 429") from None
        except openai.APIStatusError as error:
            raise BackendError(f"openai {error.status_code}") from None
        except openai.APIError as error:
            raise BackendError(type(error).__name__) from None
        return prompt.check_choice(_task_of(completion))


def _schema(choices: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "route_decision",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"task": {"type": "string", "enum": list(choices)}},
                "required": ["task"],
                "additionalProperties": False,
            },
        },
    }


def _task_of(completion: Any) -> str:
    try:
        content = completion.choices[0].message.content
        task = json.loads(content)["task"]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        raise InvalidOutput("openai answer is not the requested JSON") from None
    if not isinstance(task, str):
        raise InvalidOutput("openai answer's task is not a string")
    return task
