"""Evaluate every selected strategy (and bicubic) on one dataset's test crops."""

from pipeline import cli
from pipeline.evaluation.evaluate import evaluate_dataset


def main() -> None:
    args = cli.dataset_parser(__doc__).parse_args()
    params = cli.dataset_params(args)
    result = evaluate_dataset(params, args.dataset)
    selection = result["selection"]
    share = (selection.get("frequencies") or {}).get(selection["winner"])
    print(f"{args.dataset}: {result['n_test']} test images, {len(result['strategies'])} strategies x "
          f"{result['n_seeds']} seed(s), {result['seconds']:.1f} s on {result['device']}; winner (min max-PE over "
          f"{', '.join(selection['networks_used']) or 'no network'}): {selection['winner']}"
          + (f" (wins {share:.0%} of bootstrap resamples)" if share is not None else ""))
    print(result["verdict"])


if __name__ == "__main__":
    cli.run(main)
