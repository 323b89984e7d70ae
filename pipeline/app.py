"""`gcn-bench`: use the benchmark's trained models and metrics on your own images.

    gcn-bench upscale MODEL INPUTS... [--out DIR] [--device auto|cpu|cuda] [--tile N]
    gcn-bench score SR_DIR HR_DIR [--scale 4] [--csv scores.csv] [--networks squeeze,alex,vgg]
    gcn-bench models [--root .]
    gcn-bench config MODEL [--root .]
    gcn-bench compare PER_IMAGE_CSV [--reference bicubic] [--metrics psnr_y,ssim_y,pe_alex_lin,pe_vgg_lin]

MODEL is a strategy folder written by the train stage (models/<dataset>/<strategy>/) or
`<dataset>/<strategy>`, looked up under <root>/models. A mistake the user can fix (missing file,
unreadable image, unknown model, size mismatch) prints one line on stderr and exits with code 2;
outputs are written atomically, and only after every input has been checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline import cli, paths, strategies
from pipeline.device import choose_device
from pipeline.errors import UserError
from pipeline.fileio import atomic_write_bytes, atomic_write_text

DEVICES = ("auto", "cpu", "cuda")


def resolve_model(spec: str, root: Path = Path("."), seed: int | None = None) -> Path:
    """The model folder of MODEL (one seed's folder, holding config.json).

    MODEL is a model folder (models/<dataset>/<strategy>/seed-<k>), a strategy folder
    (models/<dataset>/<strategy>: the seed `seed`, default its lowest), or <dataset>/<strategy>
    under root/models.
    """
    candidates = [Path(spec)]
    parts = spec.strip("/").split("/")
    if len(parts) == 2:
        candidates.append(Path(root) / paths.MODELS / parts[0] / strategies.slug(strategies.canonical(parts[1])))
    for folder in candidates:
        if (folder / "config.json").is_file() and seed is None:
            return folder
        seeds = sorted(int(p.name.removeprefix("seed-")) for p in folder.glob("seed-*")
                       if p.name.removeprefix("seed-").isdigit() and (p / "config.json").is_file())
        if seeds:
            if seed is not None and seed not in seeds:
                raise UserError(f"{folder}: no model of seed {seed}; valid seeds: {', '.join(map(str, seeds))}")
            return folder / f"seed-{seeds[0] if seed is None else seed}"
    raise UserError(f"{spec}: unknown model; give a trained strategy folder (models/<dataset>/<strategy>) "
                    f"or <dataset>/<strategy>; `gcn-bench models` lists them")


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{folder / 'config.json'}: unreadable model configuration ({err})") from None


def cmd_upscale(args: argparse.Namespace) -> None:
    from pipeline.models import load_sr_model
    from pipeline.upscale import count_tiles, encode_png, list_images, read_image, super_resolve

    folder = resolve_model(args.model, args.root, args.seed)
    config = read_config(folder)
    scale, slug = int(config["scale"]), config.get("slug", folder.name)
    suffix = f"_x{scale}_{slug}"
    files = list_images(args.inputs, skip_upscaled=True)
    targets = [(args.out or f.parent) / f"{f.stem}{suffix}.png" for f in files]
    seen: dict[Path, Path] = {}
    for source, target in zip(files, targets):
        if target in seen:
            raise UserError(f"{source} and {seen[target]} would both be written to {target}; use separate --out folders")
        seen[target] = source
    # every input is decoded before anything is written, so a bad one stops the run with nothing new on disk
    shapes = [read_image(f).shape[:2] for f in files]
    device = choose_device(args.device, "--device")
    try:
        model = load_sr_model(folder).to(device)
    except UserError:
        raise
    except Exception as err:  # a corrupt or foreign generator.pt: torch.load raises many kinds
        raise UserError(f"{folder}: cannot load the model ({type(err).__name__}: {err})") from None
    total = sum(count_tiles(h, w, args.tile) for h, w in shapes)
    with tqdm(total=total, unit="tile", desc=f"upscale x{scale} {slug} ({device.type})") as bar:
        for source, target in zip(files, targets):
            sr = super_resolve(model, read_image(source), scale, device, tile=args.tile, overlap=args.overlap,
                               progress=bar)
            atomic_write_bytes(target, encode_png(sr))
            bar.write(f"{source} -> {target}")


def cmd_score(args: argparse.Namespace) -> None:
    from pipeline import perceptual
    from pipeline.score import check_pairs, pair_files, score_pairs, summary

    requested = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in requested if n not in perceptual.NETS]
    if unknown:
        raise UserError(f"--networks: unknown network {unknown[0]!r}; valid choices: {', '.join(perceptual.NETS)}")
    for path in (args.sr_dir, args.hr_dir):
        if not path.is_dir():
            raise UserError(f"{path}: no such folder")
    pairs, unpaired = pair_files(args.sr_dir, args.hr_dir)
    for path in unpaired:
        print(f"warning: {path.name} has no reference in {args.hr_dir}; skipped", file=sys.stderr)
    cropped = check_pairs(pairs, args.scale)   # a bad pair stops the run before the slow part
    device = choose_device(args.device, "--device")
    order = [s.strip() for s in args.weights_order.split(",") if s.strip()]
    nets, status = perceptual.load_networks(requested, order, args.root, device)
    with tqdm(total=len(pairs), unit="image", desc="score") as bar:
        table = score_pairs(pairs, args.scale, nets, requested, device, progress=bar)
    if args.csv:
        atomic_write_text(args.csv, table.to_csv(index=False, na_rep=""))

    stats = summary(table)
    print(f"{len(table)} images scored (x{args.scale}: PSNR with a {args.scale}-pixel border shaved)"
          + (f"; {cropped} references cropped to the SR size" if cropped else ""))
    width = max(len(c) for c in stats.index)
    print(f"{'metric':<{width}}  {'mean':>10}  {'std':>10}")
    for col, row in stats.iterrows():
        if row["mean"] is None or row["mean"] != row["mean"]:
            print(f"{col:<{width}}  {'n/a':>10}  {'n/a':>10}")
        else:
            print(f"{col:<{width}}  {row['mean']:>10.4f}  {row['std']:>10.4f}")
    for net, state in status.items():
        if not state["available"]:
            print(f"pe_{net}, pe_{net}_lin: n/a ({state['reason']})")
    if args.csv:
        print(f"per-image values: {args.csv}")


def cmd_models(args: argparse.Namespace) -> None:
    root = Path(args.root) / paths.MODELS
    rows = []
    for folder in sorted(p for p in root.glob("*/*/seed-*") if p.is_dir()):
        dataset, slug, seed = folder.parent.parent.name, folder.parent.name, folder.name.removeprefix("seed-")
        if (folder / "config.json").is_file():
            config = read_config(folder)
            rows.append((dataset, config.get("strategy", strategies.canonical(slug)), seed,
                         "-" if config.get("untrained") else str(config.get("iterations", "?")),
                         config.get("device", "-"), "yes" if config.get("completed") else "no"))
        else:  # training started (or was killed) but has not finished
            rows.append((dataset, strategies.canonical(slug), seed, "?", "-", "no"))
    if not rows:
        print(f"no trained models under {root}; run the pipeline first (dvc repro or snakemake)", file=sys.stderr)
        return
    header = ("dataset", "strategy", "seed", "iterations", "device", "completed")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(value.ljust(w) for value, w in zip(row, widths)).rstrip())


def cmd_config(args: argparse.Namespace) -> None:
    folder = resolve_model(args.model, args.root, args.seed)
    print(json.dumps(read_config(folder), indent=2))


def cmd_compare(args: argparse.Namespace) -> None:
    """Every method minus the reference, image by image: mean difference, 95% interval, paired p-value."""
    import pandas as pd

    from pipeline import stats, tables

    if not args.per_image.is_file():
        raise UserError(f"{args.per_image}: no such file (results/<dataset>/per_image.csv, written by the evaluate stage)")
    frame = tables.per_image_frame(pd.read_csv(args.per_image, dtype={"id": str}), "data")
    methods = sorted(frame["method"].unique())
    if args.reference not in methods:
        raise UserError(f"--reference {args.reference!r} is not in {args.per_image}; valid choices: {', '.join(methods)}")
    columns = {c.key: c for c in tables.COLUMNS if c.key in set(frame["metric"])}
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in columns]
    if unknown:
        raise UserError(f"--metrics: {', '.join(unknown)} not in {args.per_image}; valid choices: {', '.join(columns)}")
    for metric in metrics:
        column, arrays = columns[metric], tables.column_arrays(frame, "data", metric)
        reference = arrays.pop(args.reference, None)
        if reference is None:
            print(f"{metric}: n/a for {args.reference}")
            continue
        better = "lower" if column.lower_is_better else "higher"
        print(f"{metric} ({better} is better): method - {args.reference}, mean over seeds and test images [95% interval]")
        digits = column.decimals + 1
        for name, values in arrays.items():
            try:
                d = stats.difference_stats(values, reference)
            except ValueError as err:  # e.g. a trained method as the reference: its seeds differ
                raise UserError(f"--reference {args.reference}: {err}; pick a deterministic method such as bicubic") from None
            print(f"  {name:<16} {d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"
                  f"  p {d['p_value']:.2g}  ({d['n_seeds']} seeds x {d['n_images']} images)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gcn-bench", description=__doc__.split("\n")[0].split(": ", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("upscale", help="super-resolve images or folders of images with a trained model")
    up.add_argument("model", metavar="MODEL", help="models/<dataset>/<strategy>[/seed-<k>] folder, or <dataset>/<strategy>")
    up.add_argument("--seed", type=int, default=None, help="which seed's model (default: the lowest trained)")
    up.add_argument("inputs", metavar="INPUTS", nargs="+", type=Path, help="image files or folders of images")
    up.add_argument("--out", type=Path, default=None,
                    help="output folder (default: beside each input, as <name>_x<scale>_<strategy>.png)")
    up.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present (default)")
    up.add_argument("--tile", type=int, default=256,
                    help="tile side in input pixels, so memory stays bounded on large images; 0: no tiling (default 256)")
    up.add_argument("--overlap", type=int, default=None,
                    help="context pixels around each tile (default: the model's receptive radius, exact)")
    up.add_argument("--root", type=Path, default=Path("."), help="project folder holding models/ (default .)")
    up.set_defaults(run=cmd_upscale)

    sc = commands.add_parser("score", help="the report's metrics of SR images against HR references, per image")
    sc.add_argument("sr_dir", metavar="SR_DIR", type=Path, help="folder of super-resolved images")
    sc.add_argument("hr_dir", metavar="HR_DIR", type=Path, help="folder of references, paired by file name")
    sc.add_argument("--scale", type=int, default=4, help="upscaling factor: pixels shaved from each border for PSNR (default 4)")
    sc.add_argument("--csv", type=Path, default=None, help="write the per-image values to this CSV file")
    sc.add_argument("--networks", default="squeeze,alex,vgg",
                    help="perceptual-error networks, comma-separated, '' for none (default squeeze,alex,vgg)")
    sc.add_argument("--weights-order", default="cache,torchvision,registry",
                    help="where ImageNet weights are looked for, in order (default cache,torchvision,registry)")
    sc.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present (default)")
    sc.add_argument("--root", type=Path, default=Path("."), help="project folder whose weights/ caches the backbones (default .)")
    sc.set_defaults(run=cmd_score)

    ls = commands.add_parser("models", help="list the trained models")
    ls.add_argument("--root", type=Path, default=Path("."), help="project folder holding models/ (default .)")
    ls.set_defaults(run=cmd_models)

    cf = commands.add_parser("config", help="print a trained model's config.json")
    cf.add_argument("model", metavar="MODEL", help="models/<dataset>/<strategy>[/seed-<k>] folder, or <dataset>/<strategy>")
    cf.add_argument("--seed", type=int, default=None, help="which seed's model (default: the lowest trained)")
    cf.add_argument("--root", type=Path, default=Path("."), help="project folder holding models/ (default .)")
    cf.set_defaults(run=cmd_config)

    cp = commands.add_parser("compare", help="each method minus a reference (bicubic), paired over the test images")
    cp.add_argument("per_image", metavar="PER_IMAGE_CSV", type=Path,
                    help="results/<dataset>/per_image.csv, written by the evaluate stage")
    cp.add_argument("--reference", default="bicubic", help="the deterministic method subtracted (default bicubic)")
    cp.add_argument("--metrics", default="psnr_y,ssim_y,pe_alex_lin,pe_vgg_lin",
                    help="comma-separated per-image columns (default psnr_y,ssim_y,pe_alex_lin,pe_vgg_lin)")
    cp.set_defaults(run=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> None:
    """The `gcn-bench` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "tile", 0) < 0:
        print("error: --tile must be 0 (no tiling) or a positive number of pixels", file=sys.stderr)
        sys.exit(cli.EXIT_USER_ERROR)
    cli.run(lambda: args.run(args))


if __name__ == "__main__":
    main()
