"""What `adapter train` tells while it trains (docs/training.md, "Progress"): the step out of the run's
total, the loss, the time a step takes and the time left; a bar on a terminal, plain lines in a log
(a whole run's lines: tests/training/test_adapter_train.py)."""

import fcntl
import os
import pty
import struct
import termios
import subprocess
import sys
from pathlib import Path

import pytest

from taskrouter.training.progress import LineProgress, duration, total_steps

from .test_adapter_train import DATASET

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("examples", "batch", "epochs", "max_steps", "expected"), [
    (78, 4, 2, None, 40),  # 20 batches an epoch (the last one of 2)
    (78, 4, 2, 25, 25),  # --max-steps stops first
    (78, 4, 2, 100, 40),  # a cap past the epochs changes nothing
    (3, 32, 3, None, 3),
])
def test_the_total_is_the_batches_of_every_epoch_or_the_step_cap(examples, batch, epochs, max_steps, expected):
    assert total_steps(examples, batch, epochs, max_steps) == expected


def test_each_line_gives_the_step_of_the_total_the_rate_and_the_time_left():
    now = [100.0]
    lines: list[str] = []
    shown = LineProgress(40, 0, lines.append, clock=lambda: now[0])
    now[0] += 35.0
    shown.step(1, 1, 0.6931)
    now[0] += 37.0
    shown.step(1, 2, 0.5)
    assert lines == [
        "epoch 1 step 1/40: loss 0.6931 (35.0 s a step, about 22 min 45 s left)",
        "epoch 1 step 2/40: loss 0.5000 (36.0 s a step, about 22 min 48 s left)",
    ]


def test_a_resumed_run_measures_its_rate_on_its_own_steps():
    now = [0.0]
    lines: list[str] = []
    shown = LineProgress(10, 6, lines.append, clock=lambda: now[0])  # resumed after step 6
    now[0] += 20.0
    shown.step(2, 7, 1.0)
    assert lines == ["epoch 2 step 7/10: loss 1.0000 (20.0 s a step, about 1 min 00 s left)"]


@pytest.mark.parametrize(("seconds", "said"), [(0, "0 s"), (59.4, "59 s"), (61, "1 min 01 s"), (3725, "1 h 02 min")])
def test_durations_read_as_people_say_them(seconds, said):
    assert duration(seconds) == said


def test_a_run_on_a_terminal_redraws_one_bar(tiny_base, tmp_path):
    """Under a pseudo-terminal, the steps are one bar redrawn in place (carriage returns), with the total."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    command = [sys.executable, "-m", "taskrouter.cli", "adapter", "train", "--dataset", str(DATASET),
               "--base-model", str(tiny_base), "--out", str(tmp_path / "out"), "--max-steps", "1", "--rank", "4",
               "--batch-size", "32", "--no-archive"]
    process = subprocess.Popen(command, stdout=follower, stderr=subprocess.DEVNULL, cwd=ROOT)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal's other end closed: the run ended
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert process.wait(timeout=120) == 0
    text = seen.decode(errors="replace")
    assert "1/1" in text and "\r" in text and "loss=" in text
    assert "epoch 1 step 1/1:" not in text  # the plain lines are for logs
