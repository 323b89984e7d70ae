"""Shared plumbing for the stage CLIs in stages/: argument parsing and clean user errors."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from pipeline.config import dataset_spec, load_params
from pipeline.errors import UserError

EXIT_USER_ERROR = 2


def stage_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every stage shares (`--params`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    return parser


def dataset_parser(description: str) -> argparse.ArgumentParser:
    """`stage_parser` plus the `--dataset` option of the per-dataset stages."""
    parser = stage_parser(description)
    parser.add_argument("--dataset", required=True, help="a dataset declared under `data` in the parameters file")
    return parser


def dataset_params(args: argparse.Namespace) -> dict:
    """The validated parameters of a per-dataset stage; an undeclared `--dataset` stops listing the declared ones."""
    params = load_params(args.params)
    dataset_spec(params, args.dataset)
    return params


def run(main: Callable[[], None]) -> None:
    """Run a stage's main; a UserError becomes one clear line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def run_exit(main: Callable[[], int]) -> None:
    """A command whose main returns its exit code: `run` (a UserError is one line and exit code 2), then exit."""
    code = 0

    def call() -> None:
        nonlocal code
        code = main()

    run(call)
    sys.exit(code)
