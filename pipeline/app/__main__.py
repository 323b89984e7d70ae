"""`python -m pipeline.app`: the `gcn-bench` command without the console script (pipeline.app.command)."""

from pipeline.app.command import main

main()
