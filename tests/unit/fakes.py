"""In-memory stand-ins of the router's collaborators, shared by the unit tests."""

from __future__ import annotations

import time

from taskrouter.core.backends import Answer
from taskrouter.core.prompting import RoutingPrompt
from taskrouter.core.request import Message, RouteRequest, Strategy
from taskrouter.core.router import RouterSettings
from taskrouter.core.tasks import RegistryUnavailable, Task

TASKS = {name: Task(name, f"{name} description") for name in ("follow_up_email", "prepare_linkedin_post")}


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


class Registry:
    def __init__(self, tasks=TASKS, fail=False):
        self._tasks, self._fail = tasks, fail

    def tasks(self):
        if self._fail:
            raise RegistryUnavailable("down")
        return self._tasks


class Backend:
    def __init__(self, name, answer=None, delay_s=0.0, raises=None, block_on=None, confidence=None):
        self.name, self.answer, self.delay_s, self.raises, self.block_on = name, answer, delay_s, raises, block_on
        self.confidence = confidence
        self.prompts: list[RoutingPrompt] = []

    def decide(self, prompt, timeout_s):
        self.prompts.append(prompt)
        time.sleep(self.delay_s)
        if self.block_on is not None:
            self.block_on.wait(timeout=10)
        if self.raises:
            raise self.raises
        return Answer(prompt.parse(self.answer), self.confidence)


SETTINGS = RouterSettings(
    default_strategy=Strategy.ZERO_SHOT, primary_timeout_s=1.0, fallback_timeout_s=1.0, retry_after_s=3
)


def request(current=None, tasks=None):
    return RouteRequest(conversation=[Message(role="user", content="hi")], current_task=current, tasks=tasks)
