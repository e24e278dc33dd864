"""Synthetic labelled conversations, the research's method: an LLM writes conversations that lead to
a given task, continue it, switch to another, end it, or fit no task, from a few-shot prompt.

The labels never come from the model: a plan fixes, for each user turn, the task it must ask for
(or none), and the model only writes the words. Its answer is held to a JSON schema and checked
against the plan (as many user turns, alternating with the assistant's); a conversation that is not
gets one more try, then is dropped and counted. Each plan also draws who writes and how (role,
manner, sometimes French) and its own model seed, so that plans of the same turns ask for different
words. Conversations too close to one already kept (their user turns' word trigrams, Jaccard ≥
`NEAR_DUPLICATE`) are dropped. The same seed, tasks, model and server give the same plans, requests
and, from a deterministic server, the same file.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from taskrouter.core.events import derive_event
from taskrouter.core.tasks import Task
from taskrouter.evaluation.dataset import Conversation, as_json

SCENARIOS = ("start", "continue", "switch", "end", "none")
NEAR_DUPLICATE = 0.8
_MAX_TRIES = 2


# Who writes, and how: drawn for each plan, so that two plans of the same turns ask for different words.
_WRITERS = (
    "an account executive between two meetings", "a sales manager", "an SDR typing on a phone",
    "a founder doing sales", "a customer success manager",
)  # fmt: skip
_MANNERS = ("terse", "chatty", "with a typo or two", "polite and formal", "in fragments, no punctuation")
_FRENCH_SHARE = 0.2


@dataclass(frozen=True)
class Plan:
    """What each user turn of a conversation must ask for (a task name, or None for no task), who
    writes it and how, and the seed the model is asked with."""

    id: str
    scenario: str
    intents: tuple[str | None, ...]
    writer: str
    seed: int


def plans(tasks: Sequence[Task], scenarios: Sequence[str], per_scenario: int, seed: int) -> list[Plan]:
    """`per_scenario` plans of each scenario: tasks, writer and model seed drawn with `seed`."""
    draw = random.Random(seed)
    names = sorted(task.name for task in tasks)
    made = []
    for scenario in scenarios:
        for number in range(per_scenario):
            first = draw.choice(names)
            other = draw.choice([name for name in names if name != first] or [first])
            french = ", in French" if draw.random() < _FRENCH_SHARE else ""
            writer = f"{draw.choice(_WRITERS)}, {draw.choice(_MANNERS)}{french}"
            intents: tuple[str | None, ...] = {
                "start": (first,),
                "continue": (first, first),
                "switch": (first, other),
                "end": (first, None),
                "none": (None,),
            }[scenario]
            made.append(Plan(f"synthetic-{seed}-{scenario}-{number:03d}", scenario, intents, writer, draw.randrange(2**31)))
    return made


_SYSTEM = """You write realistic chat conversations between a salesperson (the user) and their AI sales
assistant, to test a router that decides which task the user wants. Users write like real people in
a hurry: terse, sometimes with typos, sometimes in French, never naming the task's identifier.

The assistant's tasks:
{catalogue}

Examples of the style (the labels in brackets are not part of the text):
{examples}

Write exactly the user turns the plan asks for, each followed by a short assistant reply except the
last: the conversation ends with the last user turn. A turn planned as "no task" asks for something
none of the tasks does (small talk, an unrelated question) or, after a task, closes it (thanks,
that's all). A turn planned with the task already running continues or refines it."""

_EXAMPLES = """- [start follow_up_email] "folow up to dana re the pricing pls"
- [start prepare_meeting_minutes] "minutes from my acme call"; assistant: "Sure, paste your notes."; [continue] "add that Raj owns the security review"
- [switch to structure_ideas_into_doc] "ok now turn my brainstorm notes into a proper doc"
- [end] "perfect thanks, that's all"
- [none] "c'est quoi la météo demain à Lyon ?\""""

_SCHEMA = {
    "type": "object",
    "properties": {
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"role": {"type": "string", "enum": ["user", "assistant"]}, "content": {"type": "string"}},
                "required": ["role", "content"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["messages"],
    "additionalProperties": False,
}


def request_messages(plan: Plan, tasks: Sequence[Task]) -> list[dict[str, str]]:
    catalogue = "\n".join(f"- {task.name}: {task.description}" for task in sorted(tasks, key=lambda t: t.name))
    steps = "\n".join(
        f"{number}. user turn: {'no task' if intent is None else f'the task {intent}'}"
        for number, intent in enumerate(plan.intents, start=1)
    )
    return [
        {"role": "system", "content": _SYSTEM.format(catalogue=catalogue, examples=_EXAMPLES)},
        {
            "role": "user",
            "content": f"The user: {plan.writer}.\nPlan ({plan.scenario}):\n{steps}\n"
            f"Plan as JSON: {json.dumps(list(plan.intents))}",
        },
    ]


def labelled(plan: Plan, messages: Any) -> Conversation | None:
    """The model's messages with the plan's labels, or None when they do not follow the plan."""
    if not isinstance(messages, list):
        return None
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    expected_roles = ["user", "assistant"] * (len(plan.intents) - 1) + ["user"]
    if roles != expected_roles or not all(isinstance(m.get("content"), str) and m["content"].strip() for m in messages):
        return None
    running, intents, out = None, iter(plan.intents), []
    for message in messages:
        entry: dict[str, Any] = {"role": message["role"], "content": message["content"].strip()[:4000]}
        if message["role"] == "user":
            task = next(intents)
            entry["expect"] = {"task": task, "event": derive_event(running, task)}
            running = task
        out.append(entry)
    return Conversation.model_validate({"id": plan.id, "messages": out})


def _trigrams(conversation: Conversation) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", " ".join(m.content for m in conversation.messages if m.role == "user").lower())
    return {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def is_near_duplicate(candidate: set[tuple[str, ...]], kept: Sequence[set[tuple[str, ...]]]) -> bool:
    return any(len(candidate & other) / len(candidate | other) >= NEAR_DUPLICATE for other in kept if candidate | other)


@dataclass
class Outcome:
    kept: list[Conversation]
    near_duplicates: int = 0
    unusable: int = 0  # answers that did not follow the plan, twice
    failed: int = 0  # plans whose model calls failed (the first error kept, to tell)
    first_error: str | None = None
    timed_out: int = 0  # of the failed: a request that got no whole answer within its deadline
    unfinished: int = 0  # plans the run's deadline cut off, asked or not


Complete = Callable[[list[dict[str, str]], dict[str, Any], int], Awaitable[str | None]]


class RequestTimedOut(Exception):
    """A request to the model that got no whole answer within its deadline."""


async def generate(
    plans_: Sequence[Plan],
    tasks: Sequence[Task],
    complete: Complete,
    *,
    request_timeout_s: float,
    deadline_s: float | None = None,
    concurrency: int = 4,
    on_done: Callable[[], None] = lambda: None,
) -> Outcome:
    """Ask `await complete(messages, schema, seed)` (the model's JSON text; None for a refusal) for
    each plan; keep what follows its plan and is no near-duplicate of a conversation kept before it
    (in plan order). A failing call costs its plan only: the others are kept.

    Each call has `request_timeout_s` in all, however its answer arrives: an HTTP client's timeout
    bounds each read, which a server sending a byte now and then never exceeds. The run has
    `deadline_s`: then the plans not done are cancelled and counted `unfinished`, and what the done
    ones gave is kept as usual."""
    slots = asyncio.Semaphore(concurrency)

    async def ask(plan: Plan, attempt: int) -> str | None:
        try:
            async with asyncio.timeout(request_timeout_s):
                return await complete(request_messages(plan, tasks), _SCHEMA, plan.seed + attempt)
        except TimeoutError:
            raise RequestTimedOut(f"no whole answer within {request_timeout_s:g} s") from None

    async def write(plan: Plan) -> Conversation | Exception | None:
        try:
            for attempt in range(_MAX_TRIES):
                try:
                    answer = json.loads(await ask(plan, attempt) or "")
                except ValueError:
                    continue
                conversation = labelled(plan, answer.get("messages") if isinstance(answer, dict) else None)
                if conversation is not None:
                    return conversation
            return None
        except Exception as error:  # the model's server refused, failed or stalled: this plan is lost, not the run
            return error

    async def write_in_turn(plan: Plan) -> Conversation | Exception | None:
        async with slots:
            written = await write(plan)
        on_done()  # not for a plan the deadline cancels
        return written

    running = [asyncio.create_task(write_in_turn(plan)) for plan in plans_]
    try:
        done, cut = await asyncio.wait(running, timeout=deadline_s) if running else (set(), set())
    except asyncio.CancelledError:  # Ctrl-C: the requests in flight end before their client is closed
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    for task in cut:
        task.cancel()
    await asyncio.gather(*cut, return_exceptions=True)  # each closes its connection before the run ends
    outcome = Outcome(kept=[], unfinished=len(cut))
    fingerprints: list[set[tuple[str, ...]]] = []
    for conversation in (task.result() for task in running if task in done):  # in plan order
        if isinstance(conversation, Exception):
            outcome.failed += 1
            outcome.timed_out += isinstance(conversation, RequestTimedOut)
            outcome.first_error = outcome.first_error or f"{type(conversation).__name__}: {conversation}"
            continue
        if conversation is None:
            outcome.unusable += 1
            continue
        fingerprint = _trigrams(conversation)
        if is_near_duplicate(fingerprint, fingerprints):
            outcome.near_duplicates += 1
            continue
        fingerprints.append(fingerprint)
        outcome.kept.append(conversation)
    return outcome


def as_jsonl(conversations: Sequence[Conversation]) -> str:
    return "".join(json.dumps(as_json(c), ensure_ascii=False) + "\n" for c in conversations)
