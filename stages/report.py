"""Report stage: Tables 2-5 beside the paper, figures, curves and run card, as versioned HTML under reports/."""

from pathlib import Path

from pipeline.cli import run, stage_parser
from pipeline.config import load_params
from pipeline.reporting.report import build_report


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--version", default=None,
                        help="name of the report folder under reports/ (default: the DVC experiment name "
                             "inside `dvc exp run`, else <git short rev>[-dirty]-<params hash>)")
    args = parser.parse_args()
    params = load_params(args.params)
    print(build_report(params, Path("."), version=args.version))


if __name__ == "__main__":
    run(main)
