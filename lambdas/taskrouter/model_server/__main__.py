"""`python -m taskrouter.model_server serve ...`: what `make local` starts (cli.py)."""

import sys

from taskrouter.model_server.cli import main

sys.exit(main(sys.argv[1:]))
