#!/usr/bin/env python3
"""CDK entry point: one Stage per environment of infra/stages.toml (`dev`, `prod`)."""

from __future__ import annotations

import sys

from infra.app import build_app
from infra.config import ConfigError

if __name__ == "__main__":
    try:
        build_app().synth()
    except ConfigError as error:
        sys.exit(f"configuration error: {error}")
