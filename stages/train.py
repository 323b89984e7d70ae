"""Train stage: train the selected strategies' generators for one dataset (models/<dataset>/<slug>/)."""

from __future__ import annotations

from pathlib import Path

from pipeline import strategies
from pipeline.cli import run, stage_parser
from pipeline.config import dataset_spec, load_params
from pipeline.errors import ConfigError
from pipeline.train import train_dataset


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="a dataset declared under `data` in the params file")
    parser.add_argument("--strategy", default=None,
                        help="strategies to train, overriding the `strategy` param: all, one name (dis,rec or "
                             "dis+rec) or a list in YAML form, e.g. '[dis, rec]'")
    args = parser.parse_args()
    params = load_params(args.params)
    dataset_spec(params, args.dataset)  # unknown dataset -> ConfigError naming the valid ones
    selected = None
    if args.strategy is not None:
        selected = strategies.select(parse_strategy(args.strategy))
    train_dataset(params, args.dataset, selected, Path("."))


def parse_strategy(text: str) -> object:
    """The --strategy value with the param's syntax: `all`, a name/alias, or a YAML list `[a, b]`."""
    text = text.strip()
    if text.startswith("["):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--strategy: {text!r} is not a valid list; write it as [name, name]") from None
    return text


if __name__ == "__main__":
    run(main)
