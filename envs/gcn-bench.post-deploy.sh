#!/usr/bin/env bash
# Run by Snakemake once, in the new conda environment, from the workflow's directory (the checkout):
# install gcn-bench and its pinned dependencies from pyproject.toml.
set -euo pipefail
python -m pip install -e .
