"""Live tasks the serving adapter never saw, on a deployed stage: their turns are routed by a model
that never learnt them (the router samples them more for the teacher, docs/capture.md). Shown by
`taskrouter ops unseen` and `taskrouter doctor`; read from what is deployed, not from the repository:
the router function's environment (its adapter and the adapter manifest's task names) and the registry
table it names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskrouter.adapters.dynamodb_registry import read_all_tasks
from taskrouter.adapters.settings import SettingsError, serving_adapter_from_env
from taskrouter.core.capture import BASE_ADAPTER

ROUTER_FUNCTION_OUTPUT = "RouterFunctionName"  # the Api stack's output
LIVE_ALIAS = "live"  # the version API Gateway invokes (infra/api.py)
# An AWS call: (service, operation, **parameters) -> the answer, as boto3 names them ("lambda",
# "GetFunctionConfiguration"); the IAM actions are lambda:GetFunctionConfiguration and dynamodb:Query.
Call = Callable[..., dict[str, Any]]


class NotTheRouter(Exception):
    """The function the Api stack names has no environment the router would run with (one line)."""


@dataclass(frozen=True)
class Unseen:
    adapter: str  # the serving adapter's name, or `base`
    live: int  # tasks in the registry
    tasks: tuple[str, ...]  # the live tasks its manifest does not list, sorted
    known: bool  # whether the adapter's task list is known (the base model has none to miss)

    def describe(self) -> str:
        if self.adapter == BASE_ADAPTER:
            return f"the base model serves (no adapter): none of the {self.live} live tasks is unseen"
        if not self.known:
            return f"adapter {self.adapter}: its manifest lists no tasks, so which of the {self.live} live tasks it saw is unknown"
        if not self.tasks:
            return f"adapter {self.adapter} was trained on all {self.live} live tasks"
        return (f"adapter {self.adapter} never saw {len(self.tasks)} of the {self.live} live tasks: {', '.join(self.tasks)} "
                "(their turns are captured more; harvest, review and retrain: README, the data flywheel)")


def unseen_tasks(call: Call, router_function: str) -> Unseen:
    configuration = call("lambda", "GetFunctionConfiguration", FunctionName=router_function, Qualifier=LIVE_ALIAS)
    environment = configuration.get("Environment", {}).get("Variables", {})
    table = environment.get("TASKROUTER_TABLE_NAME")
    if not table:
        raise NotTheRouter(f"function {router_function} ({LIVE_ALIAS}) has no TASKROUTER_TABLE_NAME in its environment")
    try:
        adapter = serving_adapter_from_env(environment)
    except SettingsError as error:  # the router itself refuses to start with it
        raise NotTheRouter(f"function {router_function} ({LIVE_ALIAS}): {error}") from None
    live = list(read_all_tasks(_Registry(call), table))  # as the router reads it
    return Unseen(adapter.name, len(live), adapter.unseen(live), adapter.name == BASE_ADAPTER or adapter.tasks is not None)


class _Registry:
    """The registry table's Query through `call`, as `read_all_tasks` asks a DynamoDB client for it."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def query(self, **request: Any) -> dict[str, Any]:
        return self._call("dynamodb", "Query", **request)
