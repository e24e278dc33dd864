"""What `make local` tells its operator, on stderr (log lines of the functions go to stdout)."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(f"[taskrouter-local] {message}", file=sys.stderr, flush=True)
