"""Uncertainty of the benchmark's numbers: intervals, ties with the best, winner stability, rank agreement.

Why: a table cell of the paper is one number from one training run on one test set. Lucic et
al. (2018, "Are GANs Created Equal?") showed that GAN comparisons flip with the random seed
and that rankings are only meaningful with the spread over runs reported beside them. So a
cell here is a mean with a 95% interval, the column's best is a set of methods that the data
cannot tell apart, and the paper's selection rule is reported as how often each method wins.

Design: crossed random effects. A per-image metric of one method is an array ``seeds x images``:
every training seed is scored on the same test images, so a value is
``mean + seed effect + image effect + residual`` with the seeds and the images as two crossed
random factors (neither is nested in the other). The two-stage bootstrap therefore resamples
seed indices and image indices independently and takes the mean of the selected sub-grid
(Owen 2007, "The pigeonhole bootstrap"); it is slightly conservative (the residual is counted
more than once) but, with few seeds, cannot see more seed variance than the seeds show: on
simulated data (40 images, seed sd 0.2-0.4 of the image sd) the nominal 95% interval covered the
true mean 91-95% of the time with 3-5 seeds and 94% with 10 (1000 draws each).

- ``cell_stats``: mean, percentile 95% interval of the crossed bootstrap, sd over seed means.
  With one seed it is scipy.stats.bootstrap over images (percentile, same method).
- ``compare_to_best``: the column's best by mean; every other method against it with the paired
  Wilcoxon signed-rank test over test images (each image averaged over seeds first, so images are
  the unit), two-sided because the best was chosen from the same data, Holm-corrected across the
  methods. Methods the test cannot separate from the best share rank 1 ("ties shown as ties").
- ``difference_stats``: a method minus a deterministic reference (bicubic) image by image, with the
  crossed-bootstrap interval of the mean difference and the paired p-value (``gcn-bench compare``).
- ``winner_frequencies``: the paper's selection rule (GCN paper 4.2: lowest maximum PE over the
  perceptual networks, ``minimax_pe``) re-applied on joint resamples of seeds and images; share of
  wins per method. The same for our scale-free variant (``relative_minimax_pe``): the uncalibrated
  LPIPS columns are on different scales (VGG's values are the largest for every method), so the
  paper's maximum is that one column; dividing each network's PE by bicubic's on the same images
  first lets every network count.
- ``rank_agreement`` / ``verdict``: Kendall's tau between our column and the paper's; with too few
  methods for the test to reach p < ALPHA even at perfect agreement (``min_kendall_p``) the verdict
  says so instead of counting a disagreement.

Input: per-image metrics in long form, a pandas DataFrame with columns
``dataset, method, seed, image, metric, value`` (``long_form`` converts one seed's
``results/<ds>/per_image.csv``); ``to_arrays`` gives the ``method -> seeds x images`` arrays the
functions take. Whether lower is better is given per metric by the caller (pipeline.reporting.tables.COLUMNS).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

LONG_COLUMNS = ("dataset", "method", "seed", "image", "metric", "value")
ALPHA = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0


# ----------------------------------------------------------------------------- data shape

def long_form(per_image: pd.DataFrame, dataset: str, seed: int, metrics: Iterable[str] | None = None,
              image_col: str = "id", method_col: str = "strategy") -> pd.DataFrame:
    """One seed's wide per-image table (one row per image and method, one column per metric) in long form."""
    metrics = list(metrics) if metrics is not None else [
        c for c in per_image.columns if c not in (image_col, method_col)]
    frame = per_image.melt(id_vars=[image_col, method_col], value_vars=metrics, var_name="metric", value_name="value")
    frame = frame.rename(columns={image_col: "image", method_col: "method"})
    frame["dataset"], frame["seed"] = dataset, seed
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")  # empty cells (n/a) become nan
    return frame[list(LONG_COLUMNS)]


def to_arrays(frame: pd.DataFrame, dataset: str, metric: str,
              methods: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """``method -> seeds x images`` values of one metric on one dataset, images in one shared order.

    Seeds are sorted; images are the sorted ids every kept method has. A method whose values are all
    missing (n/a, e.g. a perceptual network without weights) is left out; a method scored on a single
    seed (deterministic, e.g. bicubic) keeps one row.
    """
    part = frame[(frame["dataset"] == dataset) & (frame["metric"] == metric)]
    wanted = list(methods) if methods is not None else sorted(part["method"].unique())
    grids = {}
    for name in wanted:
        grid = part[part["method"] == name].pivot_table(index="seed", columns="image", values="value",
                                                        aggfunc="mean", dropna=False)
        if grid.size and not grid.isna().all().all():
            grids[name] = grid.sort_index()
    if not grids:
        return {}
    images = sorted(set.intersection(*(set(g.columns) for g in grids.values())))
    return {name: g[images].to_numpy(dtype=float) for name, g in grids.items()}


def _check(values: np.ndarray, what: str = "values") -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[None, :]  # one seed
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"{what}: expected a non-empty seeds x images array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{what}: {int((~np.isfinite(values)).sum())} missing or infinite values")
    return values


# ----------------------------------------------------------------------------- crossed bootstrap

def _resample_weights(n_seeds: int, n_images: int, n_resamples: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Counts of each seed and each image in every resample (drawn independently: crossed design)."""
    def counts(n: int) -> np.ndarray:
        # one flat bincount over (resample, index) pairs: much faster than rng.multinomial per row
        picks = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
        return np.bincount(picks.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(float)

    return counts(n_seeds), counts(n_images)


def _resampled_means(values: np.ndarray, seed_w: np.ndarray, image_w: np.ndarray) -> np.ndarray:
    """Mean of the resampled seeds x images grid for every resample, from the counts (no copies).

    A one-seed array (a deterministic method) is the same for every seed draw.
    """
    if values.shape[0] == 1:
        return image_w @ values[0] / image_w.shape[1]
    return ((seed_w @ values) * image_w).sum(axis=1) / values.size


def bootstrap_means(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The crossed-bootstrap distribution of the mean of a ``seeds x images`` array (one value per resample).

    Two such distributions drawn independently (other seeds and images, e.g. two datasets) give the
    interval of a difference between them (``contrast_stats``).
    """
    values = _check(values)
    seed_w, image_w = _resample_weights(values.shape[0], values.shape[1], n_resamples, np.random.default_rng(seed))
    return _resampled_means(values, seed_w, image_w)


def contrast_stats(first: np.ndarray, second: np.ndarray, n_resamples: int = N_RESAMPLES,
                   confidence: float = CONFIDENCE, seed: int = SEED) -> dict:
    """Mean of ``first`` minus mean of ``second``, two independent ``seeds x images`` samples (e.g. one paired
    difference on each of two datasets), with the percentile interval of independent crossed bootstraps.

    Why independent: the two arrays share neither test images nor training runs, so each is resampled alone.
    Returns ``{mean, ci_low, ci_high}``.
    """
    first, second = _check(first), _check(second, "second")
    draws = bootstrap_means(first, n_resamples, seed) - bootstrap_means(second, n_resamples, seed + 1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return {"mean": float(first.mean() - second.mean()), "ci_low": float(low), "ci_high": float(high)}


def cell_stats(values: np.ndarray, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
               seed: int = SEED) -> dict:
    """Mean and bootstrap CI of one table cell from its ``seeds x images`` per-image values.

    Returns ``{mean, ci_low, ci_high, seed_sd, n_seeds, n_images}``. The interval is the percentile
    interval of the crossed bootstrap (seeds and images resampled independently); with one seed it is
    scipy.stats.bootstrap over images and ``seed_sd`` is nan. ``seed_sd`` is the sd (ddof 1) of the
    per-seed means: the run-to-run spread Lucic et al. ask to report.
    """
    values = _check(values)
    n_seeds, n_images = values.shape
    mean = float(values.mean())
    tail = (1 - confidence) / 2
    if np.ptp(values) == 0:  # constant (e.g. a metric at its cap): no spread to resample
        low = high = mean
    elif n_seeds == 1:
        result = stats.bootstrap((values[0],), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                 method="percentile", vectorized=True, rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    else:
        # scipy.stats.bootstrap resamples one axis (or paired rows), not two crossed factors: done by hand.
        seed_w, image_w = _resample_weights(n_seeds, n_images, n_resamples, np.random.default_rng(seed))
        low, high = np.quantile(_resampled_means(values, seed_w, image_w), [tail, 1 - tail])
    seed_sd = float(values.mean(axis=1).std(ddof=1)) if n_seeds > 1 else math.nan
    return {"mean": mean, "ci_low": float(low), "ci_high": float(high), "seed_sd": seed_sd,
            "n_seeds": n_seeds, "n_images": n_images}


def difference_stats(values: np.ndarray, reference: np.ndarray, n_resamples: int = N_RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = SEED) -> dict:
    """Mean difference ``values - reference`` over the same test images, with its interval and paired p-value.

    ``reference`` is deterministic (e.g. bicubic): one row (the evaluate stage scores bicubic once), or one
    identical row per seed (a CSV that repeats it for every seed), which counts once. It is subtracted image
    by image from every seed's row and the difference goes through ``cell_stats`` (crossed bootstrap of seeds and images).
    Why: the image-to-image spread (a hard crop is hard for every method) cancels in the difference, so
    "is mse above bicubic?" is read from this interval, not from two overlapping cell intervals.
    Returns cell_stats' keys plus ``p_value`` (``paired_p_value``, Wilcoxon over images).
    """
    values, reference = _check(values), _check(reference, "reference")
    if reference.shape[0] > 1 and np.ptp(reference, axis=0).max() == 0:
        reference = reference[:1]  # the same deterministic values once per seed: one sample, not several
    if reference.shape[0] != 1:
        raise ValueError(f"the reference must be deterministic (equal rows), got {reference.shape[0]} different seeds")
    if reference.shape[1] != values.shape[1]:
        raise ValueError(f"paired difference needs the same images: {values.shape[1]} vs {reference.shape[1]}")
    result = cell_stats(values - reference, n_resamples, confidence, seed)
    result["p_value"] = paired_p_value(values, reference)
    return result


# ----------------------------------------------------------------------------- ties with the best

def holm(p_values: Iterable[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (controls the family-wise error rate); None/nan stay as they are.

    Sorted ascending, the i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_j).
    """
    p = list(p_values)
    present = [i for i, v in enumerate(p) if v is not None and not math.isnan(v)]
    m = len(present)
    adjusted: list[float | None] = list(p)
    running = 0.0
    for step, i in enumerate(sorted(present, key=lambda k: p[k])):
        running = max(running, min(1.0, (m - step) * p[i]))  # monotone: never below an earlier step
        adjusted[i] = running
    return adjusted


def paired_p_value(values: np.ndarray, best: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of a method against the best over test images.

    Each image is averaged over its seeds first (methods may have different seed counts, e.g. a
    deterministic bicubic). Identical per-image values (all differences zero) give 1.0.
    """
    a, b = _check(values).mean(axis=0), _check(best, "best").mean(axis=0)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same images: {a.shape[0]} vs {b.shape[0]}")
    diff = a - b
    if not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff).pvalue)


def compare_to_best(table: Mapping[str, np.ndarray], lower_is_better: bool, alpha: float = ALPHA) -> dict[str, dict]:
    """Per method ``{mean, p_value, p_holm, tied_with_best, rank}`` for one column of one dataset.

    The best is the method with the best mean. The others are tested against it (``paired_p_value``)
    and Holm-corrected across them; those with ``p_holm >= alpha`` are tied with the best and share
    rank 1 with it. The rest follow in order of mean with competition ranks after the tied group
    (4 tied -> the next is 5; equal means share a rank). The best's p-values are None.
    """
    if not table:
        return {}
    means = {name: float(_check(v, name).mean()) for name, v in table.items()}
    sign = 1.0 if lower_is_better else -1.0
    best = min(means, key=lambda name: sign * means[name])
    others = [name for name in table if name != best]
    raw = [paired_p_value(table[name], table[best]) for name in others]
    result = {best: {"mean": means[best], "p_value": None, "p_holm": None, "tied_with_best": True, "rank": 1}}
    for name, p, p_adj in zip(others, raw, holm(raw)):
        result[name] = {"mean": means[name], "p_value": p, "p_holm": p_adj, "tied_with_best": p_adj >= alpha}
    tied = sum(r["tied_with_best"] for r in result.values())
    separated = [name for name in result if not result[name]["tied_with_best"]]
    for name in separated:
        ahead = sum(sign * means[other] < sign * means[name] for other in separated)
        result[name]["rank"] = tied + ahead + 1
    for name in result:
        if result[name]["tied_with_best"]:
            result[name]["rank"] = 1
    return result


def column_table(frame: pd.DataFrame, dataset: str, metric: str, lower_is_better: bool,
                 methods: Iterable[str] | None = None, n_resamples: int = N_RESAMPLES, alpha: float = ALPHA,
                 seed: int = SEED) -> pd.DataFrame:
    """One column of a results table with its uncertainty: one row per method (index), columns
    ``mean, ci_low, ci_high, seed_sd, n_seeds, n_images, p_value, p_holm, tied_with_best, rank``.

    Methods without values for this metric (n/a) are absent; the caller shows them as n/a.
    """
    table = to_arrays(frame, dataset, metric, methods)
    compared = compare_to_best(table, lower_is_better, alpha)
    rows = {name: {**cell_stats(v, n_resamples, seed=seed), **{k: compared[name][k] for k in
                   ("p_value", "p_holm", "tied_with_best", "rank")}} for name, v in table.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


# ----------------------------------------------------------------------------- selection rule

def minimax_pe(means: Mapping[str, Mapping[str, float]], candidates: Iterable[str] | None = None) -> str:
    """The paper's selection rule (GCN paper 4.2): the candidate whose largest PE over networks is lowest.

    ``means``: method -> network column -> mean PE; ``candidates``: the methods that may win (default all).
    """
    names = list(candidates) if candidates is not None else list(means)
    return min(names, key=lambda name: max(means[name].values()))


def relative_pe(means: Mapping[str, Mapping[str, float]], reference: str) -> dict[str, dict[str, float]]:
    """Each method's PE divided by the reference's on the same column (and the same images): scale-free."""
    base = means[reference]
    return {name: {column: value / base[column] for column, value in row.items()} for name, row in means.items()}


def relative_minimax_pe(means: Mapping[str, Mapping[str, float]], candidates: Iterable[str] | None = None,
                        reference: str = "bicubic") -> str:
    """Our scale-free variant of the rule: the candidate whose largest PE relative to `reference`'s is lowest.

    A column's scale no longer decides: 0.9 on any network means 10% below bicubic's error there.
    ``means`` must hold the reference (it may or may not be a candidate).
    """
    return minimax_pe(relative_pe(means, reference), candidates)


def winner_frequencies(scores: Mapping[str, Mapping[str, np.ndarray]], candidates: Iterable[str] | None = None,
                       rule: Callable[..., str] = minimax_pe,
                       n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict[str, float]:
    """How often each candidate is the rule's winner when seeds and images are resampled.

    ``scores``: method -> network (or metric) -> ``seeds x images`` per-image values, every array on
    the same images and with the same seeds (or one seed for a deterministic method). Every resample
    draws one set of seeds and one of images used for all methods and networks (the comparison stays
    paired); ``rule(means, candidates)`` picks the winner among ``candidates`` (default every method)
    from the resampled means ``method -> network -> mean`` of every method of ``scores`` (a rule may
    use a method that cannot win, e.g. ``relative_minimax_pe``'s reference).
    Returns the share of wins per candidate, largest first, summing to 1 (methods that never win
    are absent). The unresampled winner is ``rule`` applied to the plain means.
    """
    names = list(candidates) if candidates is not None else list(scores)
    arrays = {m: {net: _check(v, f"{m}/{net}") for net, v in nets.items()} for m, nets in scores.items()}
    shapes = {v.shape for nets in arrays.values() for v in nets.values()}
    n_images = {s[1] for s in shapes}
    n_seeds = {s[0] for s in shapes} - {1}
    if len(n_images) != 1 or len(n_seeds) > 1:
        raise ValueError(f"winner_frequencies needs the same seeds and images for every array, got {sorted(shapes)}")
    seed_w, image_w = _resample_weights(max(n_seeds, default=1), n_images.pop(), n_resamples,
                                        np.random.default_rng(seed))
    boot = {m: {net: _resampled_means(v, seed_w, image_w) for net, v in nets.items()} for m, nets in arrays.items()}
    wins: dict[str, int] = {}
    for b in range(n_resamples):
        winner = rule({m: {net: float(v[b]) for net, v in nets.items()} for m, nets in boot.items()}, names)
        wins[winner] = wins.get(winner, 0) + 1
    return {m: count / n_resamples for m, count in sorted(wins.items(), key=lambda kv: -kv[1])}


# ----------------------------------------------------------------------------- agreement with the paper

def min_kendall_p(n: int) -> float:
    """The smallest two-sided p-value Kendall's test (scipy.stats.kendalltau) can give for n methods: that
    of a perfect agreement without ties. 1.0 below 2 methods. E.g. 4 methods: 2/4! = 0.083, never below 0.05."""
    if n < 2:
        return 1.0
    ranks = np.arange(n)
    return float(stats.kendalltau(ranks, ranks).pvalue)


def testable(n: int, alpha: float = ALPHA) -> bool:
    """Whether Kendall's test over n methods can reach p < alpha at all (``min_kendall_p``)."""
    return min_kendall_p(n) < alpha


def rank_agreement(ours: Mapping[str, float | None], paper: Mapping[str, float | None],
                   lower_is_better: bool) -> dict:
    """Kendall's tau (scipy.stats.kendalltau, tau-b, two-sided p) between our and the paper's column.

    Only methods with a value in both count (None/nan dropped). Tau is the same whichever way the
    metric points (both columns are ranked alike); ``lower_is_better`` orients the returned ranks
    (``ours_rank``, ``paper_rank``: 1 = best, competition ranks). Fewer than 3 shared methods, or a
    constant column, give tau and p nan. ``min_p``: the smallest p the test can give with these many
    methods (``min_kendall_p``); at or above ALPHA no ranking, however close, could be significant.
    """
    def present(v: float | None) -> bool:
        return v is not None and not math.isnan(v)

    methods = [m for m in ours if m in paper and present(ours[m]) and present(paper[m])]
    x = np.array([ours[m] for m in methods], dtype=float)
    y = np.array([paper[m] for m in methods], dtype=float)
    tau = p = math.nan
    if len(methods) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        res = stats.kendalltau(x, y)
        tau, p = float(res.statistic), float(res.pvalue)

    def ranks(v: np.ndarray) -> dict[str, int]:
        r = pd.Series(v, index=methods).rank(method="min", ascending=lower_is_better)
        return {m: int(k) for m, k in r.items()}

    return {"tau": tau, "p_value": p, "n": len(methods), "min_p": min_kendall_p(len(methods)), "methods": methods,
            "ours_rank": ranks(x), "paper_rank": ranks(y)}


def verdict(dataset: str, column: str, result: Mapping, alpha: float = ALPHA) -> str:
    """One line on a ``rank_agreement`` result, e.g.
    ``imagenet Alex-l: rankings agree with the paper (tau 0.80, p 0.002, 9 methods)``."""
    tau, p, n = result["tau"], result["p_value"], result["n"]
    if math.isnan(tau):
        return f"{dataset} {column}: rankings cannot be compared ({n} methods with values in both)"
    if not testable(n, alpha):
        return (f"{dataset} {column}: too few methods to test ({n}: Kendall's test cannot reach p < {alpha}, "
                f"its smallest p is {min_kendall_p(n):.2g}; tau {tau:.2f})")
    if p < alpha:
        outcome = "agree with the paper" if tau > 0 else "disagree with the paper"
    else:
        outcome = "do not agree significantly with the paper"
    return f"{dataset} {column}: rankings {outcome} (tau {tau:.2f}, p {p:.2g}, {n} methods)"
