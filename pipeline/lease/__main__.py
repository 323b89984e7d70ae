"""`python -m pipeline.lease`: the lease command (pipeline.lease.command; its docstring lists the modes)."""

import os

from pipeline import cli
from pipeline.lease.command import main

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
cli.run_exit(main)
