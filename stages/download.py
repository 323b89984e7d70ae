"""Download stage: fetch one declared dataset's raw images into data/raw/<dataset>."""

from pipeline.cli import dataset_params, dataset_parser, run
from pipeline.data.sources import fetch_dataset


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    params = dataset_params(args)
    fetch_dataset(params, args.dataset)


if __name__ == "__main__":
    run(main)
