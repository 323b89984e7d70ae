"""Apply a configuration overlay to params.yaml (e.g. the paper's full configuration)."""

from pipeline import cli
from pipeline.config import apply_overlay


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("overlay", help="overlay file, e.g. configs/paper.yaml or configs/smoke.yaml")
    args = parser.parse_args()
    params = apply_overlay(args.params, args.overlay)
    print(f"{args.params}: applied {args.overlay} (datasets: {', '.join(params['datasets'])})")


if __name__ == "__main__":
    cli.run(main)
