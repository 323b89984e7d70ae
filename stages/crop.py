"""Crop stage: deterministic HR/LR crop pairs of one dataset into data/crops/<dataset>."""

from pipeline.cli import dataset_params, dataset_parser, run
from pipeline.data.crop import crop_dataset


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    params = dataset_params(args)
    crop_dataset(params, args.dataset)


if __name__ == "__main__":
    run(main)
