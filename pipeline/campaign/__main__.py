"""`python -m pipeline.campaign`: the CPU campaign's command (pipeline.campaign.command; its docstring lists the options)."""

import os

from pipeline import cli
from pipeline.campaign.command import main

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
cli.run_exit(main)
