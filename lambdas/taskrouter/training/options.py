"""The training options `taskrouter adapter train` and `taskrouter adapter launch` share: the task list
and the hyper-parameters, defined once. `launch` passes them on to the job, which runs `train` with them.

Both commands import this module; neither imports the other's (train's `cli` only dispatches to
`launch`), so the package's imports form no circle."""

from __future__ import annotations

import argparse
import math

from taskrouter.arguments import positive_int
from taskrouter.repository import DEFAULT_TASKS_FILE

SEED_LIMIT = 2**32  # numpy's seeds are below it


def positive_finite_float(value: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError("must be a positive number")
    return number


def seed_value(value: str) -> int:
    number = int(value)
    if not 0 <= number < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_LIMIT - 1}")
    return number


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The task list and hyper-parameters, the same for `train` and `launch` (which passes them on)."""
    parser.add_argument("--tasks", default=str(DEFAULT_TASKS_FILE), help="the task list the router holds")
    parser.add_argument("--epochs", type=positive_int, default=2)
    parser.add_argument("--max-steps", type=positive_int, help="stop after this many optimizer steps")
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--rank", type=positive_int, default=16)
    parser.add_argument("--learning-rate", type=positive_finite_float, default=2e-4)
    parser.add_argument("--batch-size", type=positive_int, default=4)
