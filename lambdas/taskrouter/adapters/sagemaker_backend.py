"""The primary: the base LLM and its QLoRA adapter on a SageMaker endpoint (LMI container, vLLM)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from taskrouter.core.backends import Answer, BackendError, BackendNoCapacity, BackendThrottled, BackendTimeout
from taskrouter.core.confidence import NoConfidence, answer_confidence, logprobs_of
from taskrouter.core.prompting import InvalidOutput, RoutingPrompt

_THROTTLING_CODES = {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailable"}
# An inference component with no copy (scaled to zero, or starting) refuses with a 400 ValidationError
# whose message says so (AWS's scale-to-zero notebooks, "Inference Component has no capacity to process
# this request. ApplicationAutoScaling may be in-progress ..."). Calling it anyway is what wakes it:
# SageMaker counts the refusal in NoCapacityInvocationFailures, on which the stage scales from zero.
_NO_CAPACITY = "has no capacity"
# The container refusing for load, handed on by SageMaker as a ModelError with its status: LMI's
# (djl-serving) answer to a job its queue cannot take is its throttle status, 503 by default
# (`throttle_error_http_code`; model_server/protocol.py cites the source); 429 is the usual other.
# Throttled, like SageMaker's own refusals for load: the endpoint's capacity, not the model, failed.
_CONTAINER_THROTTLE_STATUSES = {429, 503}


class SageMakerBackend:
    """Invokes the endpoint (the adapter's inference component, when named) with an OpenAI
    chat-completions body, which LMI's vLLM async handler passes to vLLM's `ChatCompletionRequest`:
    the container applies the model's own chat template, and vLLM's structured outputs keep the
    answer to the allowed ones. The request's fields are those of vLLM 0.12 (LMI 0.36.0-lmi18); see
    tests/integration/servers.py for the sources."""

    name = "sagemaker"

    def __init__(self, clients: Mapping[float, Any], endpoint: str, component: str | None) -> None:
        """`clients`: sagemaker-runtime clients by the timeout (s) their connect and read are bounded
        by, one per strategy budget: a call never outlives its own deadline by much."""
        self._clients = dict(sorted(clients.items()))
        self._endpoint = endpoint
        self._component = component

    def _client_for(self, timeout_s: float) -> Any:
        fitting = [bound for bound in self._clients if bound >= timeout_s]
        return self._clients[fitting[0] if fitting else max(self._clients)]

    def decide(self, prompt: RoutingPrompt, timeout_s: float) -> Answer:
        # timeout_s is enforced by the client's connect/read timeouts and by the router's deadline.
        request: dict[str, Any] = {
            "EndpointName": self._endpoint,
            "ContentType": "application/json",  # text/plain would be read as a TGI prompt
            "Accept": "application/json",
            "Body": json.dumps(
                {
                    # No "model": LMI names the base model, or the adapter SageMaker routes to.
                    "messages": prompt.messages(),
                    "max_completion_tokens": prompt.max_answer_tokens,
                    # Greedy, and no repetition penalty: the model's generation_config.json would
                    # otherwise sample, and penalise the task names the prompt itself lists.
                    "temperature": 0.0,
                    "repetition_penalty": 1.0,
                    "structured_outputs": prompt.output_constraint(),
                    # Each generated token's logprob (no alternatives): the answer's confidence.
                    "logprobs": True,
                },
                separators=(",", ":"),
            ),
        }
        if self._component:
            request["InferenceComponentName"] = self._component
        try:
            response = self._client_for(timeout_s).invoke_endpoint(**request)
            payload = response["Body"].read()
        except (ReadTimeoutError, ConnectTimeoutError) as error:
            raise BackendTimeout(type(error).__name__) from None
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            original = error.response.get("OriginalStatusCode")  # a ModelError's: the container's status
            container_throttled = code == "ModelError" and original in _CONTAINER_THROTTLE_STATUSES
            if code in _THROTTLING_CODES or status == 429 or container_throttled:
                raise BackendThrottled(f"{code} {status}" + (f" ({original})" if original is not None else "")) from None
            if code == "ValidationError" and _NO_CAPACITY in error.response.get("Error", {}).get("Message", ""):
                raise BackendNoCapacity(f"{code} {status}") from None
            raise BackendError(f"{code} {status}") from None
        except BotoCoreError as error:
            raise BackendError(type(error).__name__) from None
        choice = _first_choice(payload)
        text = _answer_text(choice)
        task = prompt.parse(text)
        try:
            confidence = answer_confidence(text, prompt.answer_start(text), logprobs_of(choice))
        except NoConfidence:
            confidence = None  # a valid answer all the same: decided, with no confidence to hold it to
        return Answer(task, confidence)


def _first_choice(payload: bytes) -> dict[str, Any]:
    try:
        choice = json.loads(payload)["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise InvalidOutput("response is not a chat completion") from None
    if not isinstance(choice, dict):
        raise InvalidOutput("response is not a chat completion")
    return choice


def _answer_text(choice: dict[str, Any]) -> str:
    """The message content of an OpenAI `chat.completion` object's choice, as vLLM answers it."""
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str):
        raise InvalidOutput("chat completion has no text content")
    return text
