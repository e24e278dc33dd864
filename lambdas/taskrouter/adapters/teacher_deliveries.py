"""A captured turn handled once, however often Lambda delivers it.

Lambda's asynchronous invocation delivers an event at least once: "your function might receive the same
event multiple times, even if no error occurs" (the Lambda Developer Guide, "How Lambda handles errors
and retries with asynchronous invocation"). Each delivery would ask (and pay) the teacher again and
publish `TeacherAgreement` again, weighting that turn twice. So the teacher function handles a record id
once: Powertools for AWS Lambda's idempotency utility on a DynamoDB table (`DynamoDBPersistenceLayer`,
keyed by the record's id), an item written "in progress" on a condition before the turn is handled,
"completed" after it, deleted when its handling raised (a failed invocation is not retried: the event
goes to the on-failure destination, from where a person may send it again), and expiring after
`DELIVERIES_EXPIRE_AFTER_S`.

The table never costs a sample: when it cannot be read or written before the turn is handled, the turn
is handled all the same, unchecked (a duplicate delivered then would count twice: `DeliveryUnchecked`
counts those turns). Every call to it ends by a deadline (deadline_botocore.py).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

from taskrouter.adapters.deadline_botocore import DeadlineBoundClient

# DynamoDBPersistenceLayer's default attribute names: the table's key and its TTL (infra/capture.py).
DELIVERY_KEY_ATTRIBUTE = "id"
DELIVERY_EXPIRY_ATTRIBUTE = "expiration"
# Lambda keeps an event in its queue an hour at most (the teacher's maximum event age, infra/capture.py),
# then runs it within the function's timeout: a duplicate comes within about an hour of the first
# delivery's handling. Twice that, with room.
DELIVERIES_EXPIRE_AFTER_S = 2 * 3600
# One call to the table (a conditional PutItem, an UpdateItem): single-digit milliseconds within the
# region; its tries and their pauses end by this.
DELIVERY_CALL_S = 1.0
_KEY_PREFIX = "record"  # the item's key: "record#<md5 of the record id>"


class Delivery(enum.Enum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"  # handled before (or being handled): skipped
    UNCHECKED = "unchecked"  # handled, the table unusable: a duplicate would not have been told


class BoundedDynamoDB:
    """The DynamoDB client as Powertools calls it (`put_item`, `get_item`, `update_item`, `delete_item`),
    each call ending by `DELIVERY_CALL_S` from its start and by the invocation's own deadline."""

    def __init__(self, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._bounded = DeadlineBoundClient(client)
        self.meta = client.meta  # Powertools adds its feature to the client's user agent through it
        self._clock = clock
        self.ends_at = float("inf")  # the invocation's: set for each (Deliveries.once)

    def __getattr__(self, operation: str) -> Callable[..., dict[str, Any]]:
        def call(**params: Any) -> dict[str, Any]:
            return self._bounded.call(operation, min(self._clock() + DELIVERY_CALL_S, self.ends_at), **params)

        return call


class Deliveries:
    def __init__(self, store: BasePersistenceLayer, client: BoundedDynamoDB | None = None) -> None:
        self._store = store
        self._client = client
        self._config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=DELIVERIES_EXPIRE_AFTER_S)

    def once(self, record_id: str, context: Any, ends_at: float, work: Callable[[], None]) -> Delivery:
        """Runs `work` unless a delivery of `record_id` was handled within the expiry, or is being handled.
        `context`: the invocation's (an item left "in progress" by an invocation that died expires with its
        time); `ends_at`: when the last call to the table must have ended (time.monotonic()'s clock)."""
        self._config.register_lambda_context(context)
        if self._client is not None:
            self._client.ends_at = ends_at
        handling = _Handling(work)

        def handle(delivery: dict[str, str]) -> None:  # returns nothing: nothing else is stored
            handling()

        once = idempotent_function(
            handle, data_keyword_argument="delivery", persistence_store=self._store, config=self._config,
            key_prefix=_KEY_PREFIX,
        )  # fmt: skip
        try:
            once(delivery={"id": record_id})
        except IdempotencyAlreadyInProgressError:
            return Delivery.DUPLICATE
        except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError):
            if handling.error is not None:  # the work raised, then its item could not be deleted: its error
                raise handling.error from None
            if not handling.started:  # the table failed first: handled all the same, unchecked
                work()
            return Delivery.UNCHECKED
        return Delivery.HANDLED if handling.started else Delivery.DUPLICATE


class _Handling:
    """One delivery's work, and what became of it."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self.started = False
        self.error: BaseException | None = None

    def __call__(self) -> None:
        self.started = True
        try:
            self._work()
        except BaseException as error:
            self.error = error
            raise
