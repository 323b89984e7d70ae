"""`gcn-bench`: use the benchmark's trained models and metrics on your own images.

    gcn-bench upscale MODEL INPUTS... [--out DIR] [--device auto|cpu|cuda] [--tile N]
    gcn-bench score SR_DIR HR_DIR [--scale 4] [--csv scores.csv] [--networks squeeze,alex,vgg]
    gcn-bench models [--root .]
    gcn-bench config MODEL [--root .]
    gcn-bench compare PER_IMAGE_CSV [--reference bicubic] [--metrics psnr_y,ssim_y,pe_alex_lin,pe_vgg_lin]

MODEL is a model folder (models/<dataset>/<strategy>[/seed-<k>], zoo/<dataset>/<strategy>/seed-<k>) or
`<dataset>/<strategy>`, looked up under <root>/models (the train stage's models) and then in the model
zoo: <root>/zoo, or, where <root> has none, the zoo beside the installed package (the repository's).
A mistake the user can fix (missing file, unreadable image, unknown model, size mismatch, an output
path that cannot be written) prints one line on stderr and exits with code 2, with nothing written:
every input and output folder is checked before the work starts, and files are written atomically.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from tqdm import tqdm

import pipeline
from pipeline import cli, paths
from pipeline.app.outputs import atomic_file, check_target, output_folders
from pipeline.device import choose_device
from pipeline.errors import UserError
from pipeline.nets import strategies

DEVICES = ("auto", "cpu", "cuda")
ZOO = Path("zoo")   # the model zoo's folder in a project (pipeline.training.zoo.ZOO; not imported here: it loads torch)
PACKAGE_ROOT = Path(pipeline.__file__).resolve().parents[1]   # the repository of an editable install


def model_roots(root: Path = Path(".")) -> list[Path]:
    """Where `<dataset>/<strategy>` is looked up, in order: <root>/models, then the zoo (<root>/zoo, or,
    where <root> has none, the one beside the installed package)."""
    local_zoo = Path(root) / ZOO
    return [Path(root) / paths.MODELS, local_zoo if local_zoo.is_dir() else PACKAGE_ROOT / ZOO]


def trained_seeds(folder: Path) -> list[int]:
    """The seeds of a strategy folder that hold a model (seed-<k>/config.json), ascending."""
    return sorted(int(p.name.removeprefix("seed-")) for p in Path(folder).glob("seed-*")
                  if p.name.removeprefix("seed-").isdigit() and (p / "config.json").is_file())


def available_models(root: Path = Path(".")) -> list[str]:
    """Every `<dataset>/<strategy>` with a model under the model roots, models/ first."""
    names: list[str] = []
    for base in model_roots(root):
        for folder in sorted(p for p in base.glob("*/*") if trained_seeds(p)):
            name = f"{folder.parent.name}/{strategies.canonical(folder.name)}"
            if name not in names:
                names.append(name)
    return names


def resolve_model(spec: str, root: Path = Path("."), seed: int | None = None) -> Path:
    """The model folder of MODEL (one seed's folder, holding config.json).

    MODEL is a model folder (models/<dataset>/<strategy>/seed-<k>, zoo/...), a strategy folder
    (the seed `seed`, default its lowest), or <dataset>/<strategy>, looked up in `model_roots`:
    the first of them that holds the seed asked for (any seed when `seed` is None) is taken.
    """
    candidates = [Path(spec)]
    parts = spec.strip("/").split("/")
    if len(parts) == 2:
        slug = strategies.slug(strategies.canonical(parts[1]))
        candidates += [base / parts[0] / slug for base in model_roots(root)]
    found: list[int] = []
    for folder in candidates:
        if (folder / "config.json").is_file() and (seed is None or folder.name == f"seed-{seed}"):
            return folder
        seeds = trained_seeds(folder)
        if seeds and (seed is None or seed in seeds):
            return folder / f"seed-{seeds[0] if seed is None else seed}"
        found += seeds
    if found:
        raise UserError(f"{spec}: no model of seed {seed}; valid seeds: {', '.join(map(str, sorted(set(found))))}")
    available = available_models(root)
    raise UserError(f"{spec}: unknown model; valid choices: {', '.join(available) if available else 'none'} "
                    f"(<dataset>/<strategy>, or a model folder; `gcn-bench models` lists them)")


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{folder / 'config.json'}: unreadable model configuration ({err})") from None


def cmd_upscale(args: argparse.Namespace) -> None:
    from pipeline.nets.networks import load_sr_model
    from pipeline.nets.upscale import count_tiles, list_images, read_image, sr_bands, write_png

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
        check_target(target, "--out" if args.out else str(source))
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
    folders = {args.out: "--out"} if args.out else {t.parent: f"the folder of {s}" for s, t in zip(files, targets)}
    total = sum(count_tiles(h, w, args.tile) for h, w in shapes)
    with output_folders(folders), tqdm(total=total, unit="tile", desc=f"upscale x{scale} {slug} ({device.type})") as bar:
        for source, target, (height, width) in zip(files, targets, shapes):
            bands = sr_bands(model, read_image(source), scale, device, tile=args.tile, overlap=args.overlap,
                             progress=bar)
            with atomic_file(target) as handle:   # row bands streamed into the PNG: memory grows with the tile
                write_png(handle, width * scale, height * scale, bands)
            bar.write(f"{source} -> {target}")


def cmd_score(args: argparse.Namespace) -> None:
    from pipeline.evaluation import perceptual
    from pipeline.evaluation.score import check_pairs, pair_files, score_pairs, summary

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
    if args.csv:
        check_target(args.csv, "--csv")
    device = choose_device(args.device, "--device")
    order = [s.strip() for s in args.weights_order.split(",") if s.strip()]
    with output_folders({args.csv.parent: "--csv"} if args.csv else {}):
        nets, status = perceptual.load_networks(requested, order, args.root, device)
        with tqdm(total=len(pairs), unit="image", desc="score") as bar:
            table = score_pairs(pairs, args.scale, nets, requested, device, progress=bar)
        if args.csv:
            with atomic_file(args.csv) as handle:
                handle.write(table.to_csv(index=False, na_rep="").encode("utf-8"))

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


def last_validation_psnr_y(folder: Path) -> str:
    """val_psnr_y of the last row of a model's validation.csv (the monitor's), '-' when there is none."""
    try:
        with open(Path(folder) / "validation.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return "-"
    return (rows[-1].get("val_psnr_y") or "-") if rows else "-"


def model_row(folder: Path, source: str) -> tuple[str, ...]:
    """One line of `gcn-bench models`: where the model is, what was trained, how long, in which precision."""
    dataset, slug, seed = folder.parent.parent.name, folder.parent.name, folder.name.removeprefix("seed-")
    if not (folder / "config.json").is_file():   # training started (or was killed) but has not finished
        return (source, dataset, strategies.canonical(slug), seed, "?", "-", "-", "-", "no")
    config = read_config(folder)
    untrained = bool(config.get("untrained"))
    return (source, dataset, config.get("strategy", strategies.canonical(slug)), seed,
            "-" if untrained else str(config.get("iterations", "?")),
            "-" if untrained else config.get("precision", "-"), last_validation_psnr_y(folder),
            config.get("device", "-"), "yes" if config.get("completed") else "no")


def cmd_models(args: argparse.Namespace) -> None:
    models, zoo = model_roots(args.root)
    rows = [model_row(folder, source) for base, source in ((models, "models"), (zoo, "zoo"))
            for folder in sorted(p for p in base.glob("*/*/seed-*") if p.is_dir())]
    if not rows:
        print(f"no trained models under {models} and no zoo at {zoo}; run the pipeline first (dvc repro or snakemake)",
              file=sys.stderr)
        return
    header = ("source", "dataset", "strategy", "seed", "iterations", "precision", "val_psnr_y", "device", "completed")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(value.ljust(w) for value, w in zip(row, widths)).rstrip())


def cmd_config(args: argparse.Namespace) -> None:
    folder = resolve_model(args.model, args.root, args.seed)
    print(json.dumps(read_config(folder), indent=2))


PER_IMAGE_HINT = "results/<dataset>/per_image.csv, written by the evaluate stage"


def read_per_image(path: Path):
    """A per-image CSV (id, strategy, [seed,] metric columns) as a DataFrame; anything else is the user's to fix."""
    import pandas as pd

    from pipeline.reporting import tables

    if not path.is_file():
        raise UserError(f"{path}: no such file ({PER_IMAGE_HINT})")
    try:
        table = pd.read_csv(path, dtype={"id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a per-image CSV ({reason}); give {PER_IMAGE_HINT}") from None
    missing = [c for c in ("id", "strategy") if c not in table.columns]
    known = [c.key for c in tables.COLUMNS]
    if missing or not set(known) & set(table.columns):
        wanted = ", ".join(missing) if missing else f"a metric column ({', '.join(known)})"
        raise UserError(f"{path}: not a per-image CSV (no {wanted}); give {PER_IMAGE_HINT}")
    if table.empty:
        raise UserError(f"{path}: no rows (only a header); give {PER_IMAGE_HINT}")
    return table


def cmd_compare(args: argparse.Namespace) -> None:
    """Every method minus the reference, image by image: mean difference, 95% interval, paired p-value.

    Every difference is computed before anything is printed, so a refused reference prints only its error.
    """
    from pipeline.evaluation import stats
    from pipeline.reporting import tables

    frame = tables.per_image_frame(read_per_image(args.per_image), "data")
    methods = sorted(frame["method"].unique())
    if args.reference not in methods:
        raise UserError(f"--reference {args.reference!r} is not in {args.per_image}; valid choices: {', '.join(methods)}")
    columns = {c.key: c for c in tables.COLUMNS if c.key in set(frame["metric"])}
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in columns]
    if unknown:
        raise UserError(f"--metrics: {', '.join(unknown)} not in {args.per_image}; valid choices: {', '.join(columns)}")
    lines = []
    for metric in metrics:
        column, arrays = columns[metric], tables.column_arrays(frame, "data", metric)
        reference = arrays.pop(args.reference, None)
        if reference is None:
            lines.append(f"{metric}: n/a for {args.reference}")
            continue
        better = "lower" if column.lower_is_better else "higher"
        lines.append(f"{metric} ({better} is better): method - {args.reference}, mean over seeds and test images "
                     f"[95% interval]")
        digits = column.decimals + 1
        for name, values in arrays.items():
            try:
                d = stats.difference_stats(values, reference)
            except ValueError as err:  # e.g. a trained method as the reference: its seeds differ
                raise UserError(f"--reference {args.reference}: {err}; pick a deterministic method such as bicubic") from None
            lines.append(f"  {name:<16} {d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"
                         f"  p {d['p_value']:.2g}  ({d['n_seeds']} seeds x {d['n_images']} images)")
    print("\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gcn-bench", description=__doc__.split("\n")[0].split(": ", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("upscale", help="super-resolve images or folders of images with a trained model")
    up.add_argument("model", metavar="MODEL",
                    help="<dataset>/<strategy> (models/, then the zoo), or a models/... or zoo/... folder")
    up.add_argument("--seed", type=int, default=None, help="which seed's model (default: the lowest trained)")
    up.add_argument("inputs", metavar="INPUTS", nargs="+", type=Path, help="image files or folders of images")
    up.add_argument("--out", type=Path, default=None,
                    help="output folder (default: beside each input, as <name>_x<scale>_<strategy>.png)")
    up.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present (default)")
    up.add_argument("--tile", type=int, default=256,
                    help="tile side in input pixels, so memory stays bounded on large images; 0: no tiling (default 256)")
    up.add_argument("--overlap", type=int, default=None,
                    help="context pixels around each tile (default: the model's receptive radius, exact)")
    up.add_argument("--root", type=Path, default=Path("."), help="project folder holding models/ and zoo/ (default .)")
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

    ls = commands.add_parser("models", help="list the trained models (models/ and the model zoo)")
    ls.add_argument("--root", type=Path, default=Path("."), help="project folder holding models/ and zoo/ (default .)")
    ls.set_defaults(run=cmd_models)

    cf = commands.add_parser("config", help="print a trained model's config.json")
    cf.add_argument("model", metavar="MODEL",
                    help="<dataset>/<strategy> (models/, then the zoo), or a models/... or zoo/... folder")
    cf.add_argument("--seed", type=int, default=None, help="which seed's model (default: the lowest trained)")
    cf.add_argument("--root", type=Path, default=Path("."), help="project folder holding models/ and zoo/ (default .)")
    cf.set_defaults(run=cmd_config)

    cp = commands.add_parser("compare", help="each method minus a reference (bicubic), paired over the test images")
    cp.add_argument("per_image", metavar="PER_IMAGE_CSV", type=Path,
                    help="results/<dataset>/per_image.csv, written by the evaluate stage")
    cp.add_argument("--reference", default="bicubic", help="the deterministic method subtracted (default bicubic)")
    cp.add_argument("--metrics", default="psnr_y,ssim_y,pe_alex_lin,pe_vgg_lin",
                    help="comma-separated per-image columns (default psnr_y,ssim_y,pe_alex_lin,pe_vgg_lin)")
    cp.set_defaults(run=cmd_compare)
    return parser


def check_numbers(args: argparse.Namespace) -> None:
    """The numeric options' ranges, checked before any work (argparse only checks that they are integers)."""
    if getattr(args, "tile", 0) < 0:
        raise UserError("--tile must be 0 (no tiling) or a positive number of pixels")
    if getattr(args, "overlap", None) is not None and args.overlap < 0:
        raise UserError("--overlap must be 0 or a positive number of pixels (default: the model's receptive radius)")
    if getattr(args, "scale", 1) < 1:
        raise UserError(f"--scale must be a positive upscaling factor (e.g. 4), not {args.scale}")


def run_command(args: argparse.Namespace) -> None:
    check_numbers(args)
    args.run(args)


def main(argv: list[str] | None = None) -> None:
    """The `gcn-bench` console script."""
    args = build_parser().parse_args(argv)
    cli.run(lambda: run_command(args))

