"""Train stage: train the selected strategies' generators for one dataset, once per seed (models/<dataset>/<slug>/seed-<k>/)."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import dataset_params, dataset_parser, run
from pipeline.errors import ConfigError
from pipeline.nets import strategies
from pipeline.training.train import export_monitoring, train_dataset


def main() -> None:
    parser = dataset_parser(__doc__)
    parser.add_argument("--strategy", default=None,
                        help="strategies to train, overriding the `strategy` param: all, one name (dis,rec or "
                             "dis+rec) or a list in YAML form, e.g. '[dis, rec]'")
    parser.add_argument("--seed", type=int, default=None,
                        help="train this seed only (a non-negative integer), overriding `train.seeds`")
    parser.add_argument("--curves-only", action="store_true",
                        help="train nothing: write plots/curves/<dataset>/ and metrics/<dataset>-train.json from the "
                             "trained models of the selection (the Snakefile's train_curves rule)")
    args = parser.parse_args()
    params = dataset_params(args)
    selected = None if args.strategy is None else strategies.select_text(args.strategy)
    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed: must be a non-negative integer, got {args.seed}")
    seeds = None if args.seed is None else [args.seed]
    if args.curves_only:
        export_monitoring(params, args.dataset, Path("."))
        return
    # one strategy or seed among others (a Snakemake job): the per-dataset overlays are another rule's
    train_dataset(params, args.dataset, selected, Path("."), seeds=seeds,
                  curves=args.strategy is None and args.seed is None)


if __name__ == "__main__":
    run(main)
