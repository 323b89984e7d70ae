"""The paper's claims, answered per domain: supported, refuted or undecided, with the numbers behind each.

Three claims, read from the per-image metrics of a run (results/<ds>/per_image.csv, every seed):

- **adv,rec beats SRGAN perceptually** (the paper's Table 3), on each domain: the paired difference
  adv,rec - srgan of the perceptual error (`PRIMARY`, LPIPS AlexNet-lin; VGG-lin shown beside it), with
  its cost in PSNR-Y;
- **a learned extractor beats mse perceptually** (Table 2): each GCN variant - mse, Holm-corrected
  across the variants;
- **the thesis**: adv,rec's advantage over SRGAN is larger on a domain far from ImageNet (aerial, texture)
  than on natural images: a difference of the two domains' paired differences.

A paired difference pairs the two methods seed by seed on the same test images and takes the crossed
bootstrap of seeds and images (pipeline.evaluation.stats.cell_stats); the thesis contrast bootstraps each domain
independently (pipeline.evaluation.stats.contrast_stats). A claim is *supported* when the 95% interval lies wholly on
its side of zero (and, for a family of comparisons, the Holm-adjusted Wilcoxon p-value is below 0.05),
*refuted* when the interval lies wholly on the other side, and *undecided* otherwise: at this scale the
data cannot tell.

A verdict against SRGAN carries a caveat when SRGAN did not train: when it is worse than bicubic (the
untrained upscaler) both perceptually and in PSNR-Y, each interval excluding zero. The verdict is then
about a failed baseline, not about SRGAN's loss, and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from pipeline.evaluation import stats

PRIMARY = "pe_alex_lin"       # LPIPS AlexNet, calibrated: the perceptual error the verdicts read (lower is better)
SECONDARY = "pe_vgg_lin"      # LPIPS VGG16, calibrated: shown beside it, not deciding
COST = "psnr_y"               # what the perceptual gain costs in fidelity (higher is better)
DOMAINS = {"imagenet": "natural", "dtd": "texture", "sat": "aerial"}   # the paper's datasets -> domain
GCN_VARIANTS = ("dis", "rec", "dis,rec", "adv", "adv,rec")             # Table 2's learned extractors
SUPPORTED, REFUTED, UNDECIDED = "supported", "refuted", "undecided"


@dataclass
class Verdict:
    """One claim on one domain (or pair of domains): the verdict and the sentence that says why."""

    claim: str
    domain: str
    verdict: str
    evidence: str
    seeds: int
    images: int
    caveat: str = ""


def domain_of(params: Mapping, dataset: str) -> str:
    """natural / texture / aerial from the dataset's `stand_in_for` (or its name), else the dataset's name."""
    spec = params.get("data", {}).get(dataset, {})
    return DOMAINS.get(spec.get("stand_in_for") or dataset, dataset)


def grid(frame: pd.DataFrame, dataset: str, metric: str, method: str) -> pd.DataFrame:
    """``seeds x images`` values of one method (rows: seed, columns: image id)."""
    part = frame[(frame["dataset"] == dataset) & (frame["metric"] == metric) & (frame["method"] == method)]
    return part.pivot_table(index="seed", columns="image", values="value", aggfunc="mean")


def paired(frame: pd.DataFrame, dataset: str, metric: str, first: str, second: str) -> np.ndarray | None:
    """``first - second`` per seed and image, on the seeds and images both have; None when they share none."""
    a, b = grid(frame, dataset, metric, first), grid(frame, dataset, metric, second)
    seeds = sorted(set(a.index) & set(b.index))
    images = sorted(set(a.columns) & set(b.columns))
    if not seeds or not images:
        return None
    diff = a.loc[seeds, images].to_numpy(float) - b.loc[seeds, images].to_numpy(float)
    return diff if np.isfinite(diff).all() else None


def decide(low: float, high: float, p_value: float | None = None) -> str:
    """supported (interval below zero: lower is better), refuted (above zero), else undecided."""
    if high < 0 and (p_value is None or p_value < stats.ALPHA):
        return SUPPORTED
    if low > 0 and (p_value is None or p_value < stats.ALPHA):
        return REFUTED
    return UNDECIDED


def _interval(d: Mapping, digits: int = 3) -> str:
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def _difference(diff: np.ndarray) -> dict:
    result = stats.cell_stats(diff)
    result["p_value"] = float(stats.paired_p_value(diff, np.zeros_like(diff)))
    return result


def did_not_train(frame: pd.DataFrame, dataset: str, method: str) -> str:
    """Why `method` did not train on `dataset` (worse than bicubic in perceptual error and in PSNR-Y, both
    intervals excluding zero), else ""."""
    error = paired(frame, dataset, PRIMARY, method, "bicubic")
    fidelity = paired(frame, dataset, COST, method, "bicubic")
    if error is None or fidelity is None:
        return ""
    error_stats, fidelity_stats = stats.cell_stats(error), stats.cell_stats(fidelity)
    if error_stats["ci_low"] > 0 and fidelity_stats["ci_high"] < 0:
        return (f"{method} did not train here: worse than bicubic in LPIPS Alex-lin ({_interval(error_stats)}) "
                f"and in PSNR-Y ({_interval(fidelity_stats, 2)} dB)")
    return ""


def adv_rec_vs_srgan(frame: pd.DataFrame, dataset: str, domain: str) -> Verdict | None:
    """Table 3's claim on one domain: adv,rec has a lower perceptual error than SRGAN, and at what PSNR-Y cost."""
    diff = paired(frame, dataset, PRIMARY, "adv,rec", "srgan")
    if diff is None:
        return None
    main = _difference(diff)
    parts = [f"LPIPS Alex-lin adv,rec - srgan {_interval(main)}"]
    second = paired(frame, dataset, SECONDARY, "adv,rec", "srgan")
    if second is not None:
        parts.append(f"VGG-lin {_interval(stats.cell_stats(second))}")
    cost = paired(frame, dataset, COST, "adv,rec", "srgan")
    if cost is not None:
        parts.append(f"PSNR-Y {_interval(stats.cell_stats(cost), 2)} dB")
    return Verdict("adv,rec beats SRGAN in perceptual error", domain, decide(main["ci_low"], main["ci_high"]),
                   "; ".join(parts), diff.shape[0], diff.shape[1], did_not_train(frame, dataset, "srgan"))


def learned_vs_mse(frame: pd.DataFrame, dataset: str, domain: str) -> Verdict | None:
    """Table 2's claim on one domain: some learned extractor (a GCN variant) beats mse perceptually."""
    results = {}
    for name in GCN_VARIANTS:
        diff = paired(frame, dataset, PRIMARY, name, "mse")
        if diff is not None:
            results[name] = (_difference(diff), diff.shape)
    if not results:
        return None
    adjusted = dict(zip(results, stats.holm([r["p_value"] for r, _ in results.values()])))
    better = [n for n, (r, _) in results.items() if decide(r["ci_low"], r["ci_high"], adjusted[n]) == SUPPORTED]
    worse = [n for n, (r, _) in results.items() if decide(r["ci_low"], r["ci_high"], adjusted[n]) == REFUTED]
    verdict = SUPPORTED if better else REFUTED if len(worse) == len(results) else UNDECIDED
    best = min(results, key=lambda n: results[n][0]["mean"])
    shown = better or [best]
    evidence = "; ".join(f"{n} - mse {_interval(results[n][0])} (Holm p {adjusted[n]:.2g})" for n in shown)
    if len(results) == 1:
        evidence += " (one variant trained)"
    seeds = min(shape[0] for _, shape in results.values())
    images = min(shape[1] for _, shape in results.values())
    return Verdict("a learned extractor beats mse perceptually (LPIPS Alex-lin)", domain, verdict, evidence, seeds,
                   images)


def thesis(frame: pd.DataFrame, params: Mapping) -> list[Verdict]:
    """adv,rec's advantage over SRGAN is larger on each domain far from ImageNet than on natural images."""
    domains = {domain_of(params, ds): ds for ds in params["datasets"]}
    diffs = {domain: paired(frame, ds, PRIMARY, "adv,rec", "srgan") for domain, ds in domains.items()}
    natural = diffs.get("natural")
    if natural is None:
        return []
    failed = {domain: bool(did_not_train(frame, ds, "srgan")) for domain, ds in domains.items()}
    out = []
    for domain, diff in diffs.items():
        if domain == "natural" or diff is None:
            continue
        contrast = stats.contrast_stats(diff, natural)
        where = [d for d in ("natural", domain) if failed[d]]
        caveat = f"srgan did not train on {' and '.join(where)} images (worse than bicubic)" if where else ""
        out.append(Verdict("adv,rec's advantage over SRGAN is larger than on natural images", domain,
                           decide(contrast["ci_low"], contrast["ci_high"]),
                           f"(adv,rec - srgan on {domain}) - (on natural), LPIPS Alex-lin {_interval(contrast)}",
                           min(diff.shape[0], natural.shape[0]), min(diff.shape[1], natural.shape[1]), caveat))
    return out


def verdicts(params: Mapping, frames: Mapping[str, pd.DataFrame]) -> list[dict]:
    """Every claim the run's methods and domains can answer, as dicts (Verdict's fields), claims in paper order."""
    found: list[Verdict] = []
    for check in (adv_rec_vs_srgan, learned_vs_mse):
        for ds in params["datasets"]:
            if ds in frames:
                found += [v for v in [check(frames[ds], ds, domain_of(params, ds))] if v is not None]
    if frames:
        found += thesis(pd.concat(frames.values()), params)
    return [asdict(v) for v in found]


def _caveat(row: Mapping) -> str:
    return f" (caveat: {row['caveat']})" if row.get("caveat") else ""


def markdown(rows: list[dict]) -> str:
    """The verdicts as a markdown table (README, reports/<version>/verdicts.md)."""
    lines = ["| claim | domain | verdict | evidence: mean [95% interval] | seeds x test crops |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['domain']} | **{r['verdict']}**{_caveat(r)} | {r['evidence']} | "
              f"{r['seeds']} x {r['images']} |" for r in rows]
    return "\n".join(lines) + "\n"
