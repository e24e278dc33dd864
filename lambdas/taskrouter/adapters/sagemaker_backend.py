"""The primary: the base LLM and its QLoRA adapter on a SageMaker endpoint (LMI container)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from taskrouter.core.backends import BackendError, BackendThrottled, BackendTimeout
from taskrouter.core.prompt_formats import render
from taskrouter.core.prompting import InvalidOutput, RoutingPrompt

_THROTTLING_CODES = {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailable"}


class SageMakerBackend:
    name = "sagemaker"

    def __init__(self, client: Any, endpoint: str, component: str | None, prompt_format: str) -> None:
        self._client = client
        self._endpoint = endpoint
        self._component = component
        self._prompt_format = prompt_format

    def decide(self, prompt: RoutingPrompt, timeout_s: float) -> str | None:
        # timeout_s is enforced by the client's connect/read timeouts and by the router's deadline.
        request: dict[str, Any] = {
            "EndpointName": self._endpoint,
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps(
                {
                    "inputs": render(self._prompt_format, prompt),
                    "parameters": {
                        "max_new_tokens": prompt.max_new_tokens,
                        "do_sample": False,
                        # LMI passes what it does not know of `parameters` on to vLLM's request:
                        # the engine itself keeps the output to the allowed answers.
                        "structured_outputs": prompt.output_constraint(),
                    },
                }
            ),
        }
        if self._component:
            request["InferenceComponentName"] = self._component
        try:
            response = self._client.invoke_endpoint(**request)
            payload = response["Body"].read()
        except (ReadTimeoutError, ConnectTimeoutError) as error:
            raise BackendTimeout(type(error).__name__) from None
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _THROTTLING_CODES or status == 429:
                raise BackendThrottled(f"{code} {status}") from None
            raise BackendError(f"{code} {status}") from None
        except BotoCoreError as error:
            raise BackendError(type(error).__name__) from None
        return prompt.parse(_generated_text(payload))


def _generated_text(payload: bytes) -> str:
    """The text of an LMI/TGI answer: `{"generated_text": s}` or `[{"generated_text": s}]`."""
    try:
        body = json.loads(payload)
    except ValueError:
        raise InvalidOutput("response is not JSON") from None
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    text = body.get("generated_text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise InvalidOutput("response has no generated_text")
    return text
