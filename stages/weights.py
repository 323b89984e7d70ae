"""Resolve every ImageNet backbone the pipeline can use (LPIPS trunks, VGG19 for cla/srgan) into weights/."""

from pipeline import cli
from pipeline.config import load_params
from pipeline.nets.weights import fetch_all


def main() -> None:
    args = cli.stage_parser(__doc__).parse_args()
    records = fetch_all(load_params(args.params))
    for name, record in records.items():
        state = f"{record['source']} (sha256 {record['sha256'][:12]})" if record["available"] else "n/a: " + record["reason"]
        print(f"{name}: {state}")


if __name__ == "__main__":
    cli.run(main)
