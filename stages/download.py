"""Download stage: fetch one declared dataset's raw images into data/raw/<dataset>."""

from pipeline.cli import run, stage_parser
from pipeline.config import load_params
from pipeline.sources import fetch_dataset


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="a key of `data` in params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    fetch_dataset(params, args.dataset)


if __name__ == "__main__":
    run(main)
