"""The standard SR protocol: score one dataset's trained models on the test-only sets of eval.benchmarks, whole images."""

from pipeline import cli
from pipeline.evaluation.benchmark import evaluate_benchmarks


def main() -> None:
    args = cli.dataset_parser(__doc__).parse_args()
    params = cli.dataset_params(args)
    result = evaluate_benchmarks(params, args.dataset)
    if not result["benchmarks"]:
        print(f"{args.dataset}: no test-only set in eval.benchmarks; nothing scored")
    for name, record in result["benchmarks"].items():
        best = max(record["strategies"], key=lambda s: record["strategies"][s]["psnr_y"] or -1.0)
        print(f"{args.dataset} on {name}: {record['n_images']} whole images, {len(record['strategies'])} strategies; "
              f"best PSNR-Y {best} {record['strategies'][best]['psnr_y']:.2f} dB")


if __name__ == "__main__":
    cli.run(main)
