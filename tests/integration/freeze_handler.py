"""A Lambda handler for tests/integration/test_local_freeze.py only, run in `make local`'s containers.

It answers at once and, when asked, leaves a thread behind that writes a file some time after the
answer: the "send after responding" design that a frozen Lambda environment defeats. The answer's body
is the container's process id.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    if "write" in event:
        path, after_s = Path(event["write"]), float(event.get("after_s", 0.2))

        def write_later() -> None:
            time.sleep(after_s)
            path.write_text("written after the answer\n", encoding="utf-8")

        threading.Thread(target=write_later, name="after-the-answer", daemon=True).start()
    time.sleep(float(event.get("busy_s", 0)))  # an invocation that takes this long
    return {"statusCode": 200, "body": str(os.getpid())}
