"""Crop stage: deterministic HR/LR crop pairs of one dataset into data/crops/<dataset>."""

from pipeline.cli import run, stage_parser
from pipeline.config import load_params
from pipeline.crop import crop_dataset


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="a key of `data` in params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    crop_dataset(params, args.dataset)


if __name__ == "__main__":
    run(main)
