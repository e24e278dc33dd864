"""The fallback: a hosted OpenAI model (or any OpenAI-compatible server) with structured output.

Every strategy reaches it: the strategy's own prompt, with an answer held to a strict JSON schema
whose reasoning fields (chain of thought, ReAct's thought and observation) come before the task, asked
in the server's dialect (structured_output.py). `openai` is imported, and the client built, when the
container starts, never inside a request. The client's `timeout` bounds each read only: its transport
(deadline_transport.py) ends each request by its timeout in total, a trickling server's included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import openai

from taskrouter.adapters.deadline_transport import DeadlineTransport
from taskrouter.adapters.structured_output import ResponseFormat, ResponseFormatField, StructuredOutput
from taskrouter.core.backends import Answer, BackendError, BackendThrottled, BackendTimeout
from taskrouter.core.prompting import InvalidOutput, RoutingPrompt
from taskrouter.core.request import Strategy

logger = logging.getLogger(__name__)

# Room for the JSON object: the task alone, or one or two reasoning lines before it.
ANSWER_TOKENS = {Strategy.ZERO_SHOT: 64, Strategy.FEW_SHOT_COT: 160, Strategy.REACT: 224}


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        api_key: Callable[[], str | None],
        response_format: ResponseFormat = ResponseFormat.JSON_SCHEMA,
    ) -> None:
        self._model = model
        self._structured_output = StructuredOutput(response_format)
        self._api_key = api_key  # None: the client reads OPENAI_API_KEY (local mode only); cached by its reader
        self._lock = threading.Lock()
        self._client: openai.OpenAI | None = None
        self._client_key: str | None = None

    def warm(self) -> None:
        """Build the client now (the container's start-up), so that the first fallback does not."""
        try:
            self._openai()
        except Exception as error:  # the secret unreadable now: the first request tries again
            logger.warning("openai client not built at start-up: %s", type(error).__name__)

    def _openai(self) -> openai.OpenAI:
        key = self._api_key()
        with self._lock:
            if self._client is None or key != self._client_key:  # a rotated key gets a new client
                self._client = openai.OpenAI(
                    api_key=key,
                    max_retries=0,  # each call sets its timeout
                    http_client=openai.DefaultHttpxClient(transport=DeadlineTransport()),
                )
                self._client_key = key
                # The client imports its resources on first use (~30 ms for chat): make that now.
                _ = self._client.chat.completions
            return self._client

    def decide(self, prompt: RoutingPrompt, timeout_s: float) -> Answer:
        deadline = time.monotonic() + timeout_s
        try:
            client = self._openai()
        except Exception as error:  # the key's secret unreadable, or no key at all: no answer from here
            raise BackendError(f"openai client unavailable: {type(error).__name__}") from None

        def ask(response_format: ResponseFormatField) -> Any:
            # What getting the client took, and a refused first dialect, are part of the budget.
            timeout_s = deadline - time.monotonic()
            if timeout_s <= 0:
                raise BackendTimeout("openai: no time left")
            return client.chat.completions.create(
                model=self._model,
                messages=prompt.json_messages(),  # type: ignore[arg-type]
                response_format=response_format,  # type: ignore[arg-type]
                temperature=0,
                max_completion_tokens=ANSWER_TOKENS[prompt.strategy],
                timeout=timeout_s,
            )

        try:
            completion = self._structured_output.create(ask, "route_decision", prompt.json_schema())
        except openai.APITimeoutError:
            raise BackendTimeout("openai timeout") from None
        except openai.RateLimitError:
            raise BackendThrottled("openai 429") from None
        except openai.APIStatusError as error:
            raise BackendError(f"openai {error.status_code}") from None
        except openai.APIError as error:
            raise BackendError(type(error).__name__) from None
        return Answer(prompt.parse_json(_content_of(completion)))  # OpenAI's probability is not asked for


def _content_of(completion: Any) -> str:
    try:
        content = completion.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise InvalidOutput("openai answer has no message") from None
    if not isinstance(content, str):
        raise InvalidOutput("openai answer has no text content (a refusal?)")
    return content
