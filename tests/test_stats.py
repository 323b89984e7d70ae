"""pipeline.evaluation.stats on simulated seeds x images data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import stats

TRUE_MEAN = 1.0


def crossed(rng: np.random.Generator, n_seeds: int, n_images: int, seed_sd: float, image_sd: float,
            noise_sd: float, mean: float = TRUE_MEAN) -> np.ndarray:
    """One draw of the crossed design: mean + seed effect + image effect + residual."""
    return (mean + rng.normal(0, seed_sd, (n_seeds, 1)) + rng.normal(0, image_sd, (1, n_images))
            + rng.normal(0, noise_sd, (n_seeds, n_images)))


def coverage(draws: list[np.ndarray]) -> float:
    hits = [r["ci_low"] <= TRUE_MEAN <= r["ci_high"]
            for r in (stats.cell_stats(x, n_resamples=300, seed=k) for k, x in enumerate(draws))]
    return float(np.mean(hits))


# ----------------------------------------------------------------------------- cell_stats

def test_crossed_ci_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    draws = [crossed(rng, 5, 40, seed_sd=0.3, image_sd=1.0, noise_sd=0.5) for _ in range(200)]
    both = coverage(draws)
    assert 0.88 <= both <= 0.99
    # Ignoring the seeds (image bootstrap of the seed-averaged images) misses the run-to-run
    # variance: the same draws are covered clearly less often.
    images_only = coverage([x.mean(axis=0) for x in draws])
    assert images_only < both - 0.05


def test_one_seed_is_the_image_bootstrap():
    rng = np.random.default_rng(1)
    draws = [crossed(rng, 1, 40, seed_sd=0.0, image_sd=1.0, noise_sd=0.5) for _ in range(200)]
    assert 0.88 <= coverage(draws) <= 0.99
    r = stats.cell_stats(draws[0])
    assert r["n_seeds"] == 1 and r["n_images"] == 40 and math.isnan(r["seed_sd"])
    assert r["mean"] == pytest.approx(draws[0].mean())
    assert stats.cell_stats(draws[0][0]) == r  # a 1-D array is one seed


def test_cell_stats_reports_seed_sd_and_is_deterministic():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    r = stats.cell_stats(x, n_resamples=500, seed=3)
    assert r["mean"] == pytest.approx(3.0)
    assert r["seed_sd"] == pytest.approx(np.std([2.0, 4.0], ddof=1))
    assert r["ci_low"] < 3.0 < r["ci_high"]
    assert stats.cell_stats(x, n_resamples=500, seed=3) == r
    constant = stats.cell_stats(np.full((3, 4), 0.25))
    assert constant["ci_low"] == constant["ci_high"] == 0.25


def test_cell_stats_rejects_missing_values():
    with pytest.raises(ValueError, match="missing"):
        stats.cell_stats(np.array([[1.0, np.nan]]))


# ----------------------------------------------------------------------------- Holm

def test_holm_worked_example():
    # m = 4; sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 1*0.04)
    # (R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") = 0.03 0.06 0.06 0.02)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = stats.holm([0.01, None, 0.02])  # a missing p-value is not part of the family
    assert adjusted[1] is None and adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)


# ----------------------------------------------------------------------------- compare_to_best

def test_paired_test_finds_a_planted_difference():
    rng = np.random.default_rng(2)
    base = crossed(rng, 3, 50, seed_sd=0.1, image_sd=1.0, noise_sd=0.1)
    worse = base + 0.05 + rng.normal(0, 0.1, base.shape)  # small next to the image spread, but paired
    result = stats.compare_to_best({"a": base, "b": worse}, lower_is_better=True)
    assert result["a"]["rank"] == 1 and result["a"]["p_value"] is None
    assert result["b"]["p_holm"] < 0.05 and not result["b"]["tied_with_best"] and result["b"]["rank"] == 2
    # Higher is better: the same data puts b first.
    flipped = stats.compare_to_best({"a": base, "b": worse}, lower_is_better=False)
    assert flipped["b"]["rank"] == 1 and flipped["a"]["rank"] == 2


def test_paired_test_false_positive_rate_is_near_alpha():
    rng = np.random.default_rng(3)
    separated = 0
    sims = 1000
    for _ in range(sims):
        images = rng.normal(0, 1.0, (1, 30))  # shared by both methods: the pairing
        a = images + rng.normal(0, 0.3, (2, 30))
        b = images + rng.normal(0, 0.3, (2, 30))
        result = stats.compare_to_best({"a": a, "b": b}, lower_is_better=True)
        separated += not all(r["tied_with_best"] for r in result.values())  # either may be the best
    # Two-sided because the best is picked from the same data: a one-sided test in the observed
    # direction would separate about 10% of equal pairs.
    assert 0.03 <= separated / sims <= 0.08


def test_ties_shown_as_ties():
    rng = np.random.default_rng(4)
    a = crossed(rng, 2, 30, seed_sd=0.1, image_sd=1.0, noise_sd=0.1)
    table = {"a": a, "a_copy": a.copy(), "c": a + 1.0, "d": a + 2.0}
    result = stats.compare_to_best(table, lower_is_better=True)
    assert result["a_copy"]["p_value"] == 1.0 and result["a_copy"]["tied_with_best"]
    assert [result[m]["rank"] for m in ("a", "a_copy", "c", "d")] == [1, 1, 3, 4]


def test_ties_use_the_holm_corrected_p_values():
    # Per-image differences 0.01 * (1..20), the ranks 1-8 and 14 negative: exact Wilcoxon p = 0.040.
    ranks = np.arange(1, 21)
    diff = np.where((ranks <= 8) | (ranks == 14), -ranks, ranks) / 100.0
    best = np.linspace(0.0, 0.1, 20)[None, :]
    table = {"best": best, "b": best + diff, "c": best + diff[::-1]}  # same diffs, other images
    result = stats.compare_to_best(table, lower_is_better=True)
    for name in ("b", "c"):
        assert result[name]["p_value"] == pytest.approx(0.04, abs=1e-3)  # alone, separated from the best
        assert result[name]["p_holm"] == pytest.approx(0.08, abs=2e-3)    # two tests: tied after Holm
        assert result[name]["tied_with_best"] and result[name]["rank"] == 1


def test_deterministic_method_with_one_seed_is_compared_per_image():
    rng = np.random.default_rng(5)
    images = rng.normal(0, 1.0, (1, 40))
    bicubic = images + 0.5                                     # one seed: deterministic
    trained = images + rng.normal(0, 0.05, (3, 40))
    result = stats.compare_to_best({"bicubic": bicubic, "mse": trained}, lower_is_better=True)
    assert result["mse"]["rank"] == 1 and result["bicubic"]["rank"] == 2


# ----------------------------------------------------------------------------- winner_frequencies

def pe_scores(rng: np.random.Generator, offsets: dict[str, dict[str, float]], n_seeds: int = 3,
              n_images: int = 40) -> dict[str, dict[str, np.ndarray]]:
    """method -> network -> seeds x images PE, images shared across methods and networks."""
    images = rng.normal(0.3, 0.05, (1, n_images))
    return {m: {net: images + off + rng.normal(0, 0.02, (n_seeds, n_images)) for net, off in nets.items()}
            for m, nets in offsets.items()}


def test_winner_frequencies_clear_winner_and_sum_to_one():
    rng = np.random.default_rng(6)
    scores = pe_scores(rng, {"adv,rec": {"alex": 0.0, "vgg": 0.01},
                             "dis": {"alex": 0.05, "vgg": 0.06},
                             "mse": {"alex": 0.1, "vgg": 0.1}})
    freq = stats.winner_frequencies(scores, n_resamples=500)
    assert sum(freq.values()) == pytest.approx(1.0)
    assert freq.get("adv,rec", 0.0) > 0.99


def test_winner_frequencies_uses_the_maximum_over_networks():
    rng = np.random.default_rng(7)
    # "spiky" is best on alex but worst on vgg: the minimax rule must not pick it.
    scores = pe_scores(rng, {"spiky": {"alex": -0.1, "vgg": 0.1}, "even": {"alex": 0.02, "vgg": 0.02}})
    assert stats.winner_frequencies(scores, n_resamples=300) == {"even": 1.0}
    assert stats.winner_frequencies(scores, candidates=["spiky"], n_resamples=50) == {"spiky": 1.0}


def test_winner_frequencies_split_between_equal_methods():
    rng = np.random.default_rng(8)
    scores = pe_scores(rng, {"dis": {"alex": 0.0}, "adv,rec": {"alex": 0.0}}, n_seeds=2, n_images=20)
    freq = stats.winner_frequencies(scores, n_resamples=500)
    assert sum(freq.values()) == pytest.approx(1.0)
    assert set(freq) == {"dis", "adv,rec"} and 0.05 < freq["dis"] < 0.95


def test_winner_frequencies_rejects_misaligned_arrays():
    with pytest.raises(ValueError, match="same seeds and images"):
        stats.winner_frequencies({"a": {"alex": np.zeros((2, 5))}, "b": {"alex": np.zeros((2, 6))}})


def test_relative_rule_is_scale_free_where_the_papers_is_decided_by_one_column():
    """VGG's uncalibrated PE is on a larger scale: the paper's rule ranks by it alone and picks "vgg_only", 1% below
    bicubic on VGG but 40% above it on Alex. Relative to bicubic, "even" (5% below on both) wins; rescaling a column
    changes the paper's winner, never the scale-free one."""
    rng = np.random.default_rng(9)
    images = rng.uniform(0.8, 1.2, (1, 30))
    def pe(alex: float, vgg: float) -> dict[str, np.ndarray]:
        return {"pe_alex": alex * images, "pe_vgg": vgg * images}
    scores = {"bicubic": pe(0.5, 3.0), "vgg_only": pe(0.7, 2.97), "even": pe(0.475, 2.985)}
    means = {m: {c: float(v.mean()) for c, v in nets.items()} for m, nets in scores.items()}
    assert stats.minimax_pe(means) == "vgg_only"
    assert stats.relative_minimax_pe(means) == "even"
    assert stats.relative_pe(means, "bicubic")["even"] == pytest.approx({"pe_alex": 0.95, "pe_vgg": 0.995})
    assert stats.winner_frequencies(scores, rule=stats.relative_minimax_pe, n_resamples=200) == {"even": 1.0}
    # among candidates that exclude the reference, bicubic's PE still normalises
    assert stats.winner_frequencies(scores, candidates=["vgg_only", "even"], rule=stats.relative_minimax_pe,
                                    n_resamples=50) == {"even": 1.0}
    shrunk = {m: {"pe_alex": nets["pe_alex"], "pe_vgg": nets["pe_vgg"] / 10} for m, nets in scores.items()}
    shrunk_means = {m: {c: float(v.mean()) for c, v in nets.items()} for m, nets in shrunk.items()}
    assert stats.minimax_pe(shrunk_means) == "even" and stats.relative_minimax_pe(shrunk_means) == "even"


# ----------------------------------------------------------------------------- rank agreement

def test_rank_agreement_identical_reversed_and_missing():
    paper = {"mse": 0.30, "srgan": 0.20, "dis": 0.10, "adv,rec": 0.12, "rec": 0.25}
    same = stats.rank_agreement({m: v * 2 + 1 for m, v in paper.items()}, paper, lower_is_better=True)
    assert same["tau"] == pytest.approx(1.0) and same["n"] == 5
    assert same["ours_rank"]["dis"] == 1 and same["paper_rank"]["mse"] == 5
    reversed_ = stats.rank_agreement({m: -v for m, v in paper.items()}, paper, lower_is_better=True)
    assert reversed_["tau"] == pytest.approx(-1.0)
    ours = {"mse": 0.3, "srgan": None, "dis": float("nan"), "adv,rec": 0.1, "rec": 0.2, "bicubic": 0.5}
    partial = stats.rank_agreement(ours, paper, lower_is_better=True)
    assert partial["methods"] == ["mse", "adv,rec", "rec"] and partial["n"] == 3
    assert math.isnan(stats.rank_agreement({"mse": 1.0}, paper, True)["tau"])


def test_verdict_lines():
    paper = {f"m{i}": float(i) for i in range(9)}
    agree = stats.rank_agreement({m: v + (0.5 if m == "m3" else 0) for m, v in paper.items()}, paper, True)
    assert stats.verdict("imagenet", "Alex-l", agree).startswith("imagenet Alex-l: rankings agree with the paper (tau 1")
    assert "9 methods" in stats.verdict("imagenet", "Alex-l", agree)
    opposite = stats.rank_agreement({m: -v for m, v in paper.items()}, paper, True)
    assert "rankings disagree with the paper" in stats.verdict("dtd", "VGG", opposite)
    noise = {m: float(i) for i, m in enumerate("abcdef")}
    weak = stats.rank_agreement({"a": 2.0, "b": 1.0, "c": 4.0, "d": 3.0, "e": 6.0, "f": 5.0}, noise, True)
    assert 0.05 < weak["p_value"] < 0.5  # positive tau (0.6), but 6 methods cannot show it
    assert "do not agree significantly" in stats.verdict("sat", "L2", weak)
    assert "cannot be compared" in stats.verdict("sat", "L2", stats.rank_agreement({}, noise, True))


@pytest.mark.parametrize("n, smallest", [(3, 2 / 6), (4, 2 / 24), (5, 2 / 120), (6, 2 / 720)])
def test_smallest_kendall_p_is_that_of_a_perfect_agreement(n, smallest):
    """Exact test, no ties: a perfect agreement is 1 of n! orders, two-sided 2 / n!."""
    assert stats.min_kendall_p(n) == pytest.approx(smallest)
    assert stats.testable(n) == (smallest < stats.ALPHA)


def test_too_few_methods_to_test_is_not_a_disagreement():
    """4 methods in perfect agreement: p = 0.083, so Kendall's test can never say yes; the verdict says so. 5 can."""
    paper = {"bicubic": 0.5, "mse": 0.4, "srgan": 0.2, "adv,rec": 0.3}
    four = stats.rank_agreement({m: v * 3 for m, v in paper.items()}, paper, True)
    assert four["tau"] == pytest.approx(1.0) and four["min_p"] == pytest.approx(1 / 12)
    line = stats.verdict("sat", "L2", four)
    assert "too few methods to test" in line and "disagree" not in line and "do not agree" not in line
    five = stats.rank_agreement({**{m: v * 3 for m, v in paper.items()}, "dis": 0.03}, {**paper, "dis": 0.01}, True)
    assert "rankings agree with the paper" in stats.verdict("sat", "L2", five)


# ----------------------------------------------------------------------------- data shape

def test_long_form_to_arrays_and_column_table():
    rng = np.random.default_rng(9)
    images = [f"{i:04d}" for i in range(12)]
    frames = []
    for seed in (0, 1):
        rows = []
        for method, shift in (("mse", 0.0), ("dis", 0.5)):
            for image in images:
                rows.append({"id": image, "strategy": method, "l2": shift + rng.normal(0, 0.01),
                             "pe_squeeze": None})  # n/a network: empty cells
        frames.append(stats.long_form(pd.DataFrame(rows), "dtd", seed))
    frame = pd.concat(frames[::-1])  # order of seeds in the frame does not matter
    assert list(frame.columns) == list(stats.LONG_COLUMNS)
    arrays = stats.to_arrays(frame, "dtd", "l2")
    assert set(arrays) == {"mse", "dis"} and arrays["mse"].shape == (2, 12)
    assert stats.to_arrays(frame, "dtd", "pe_squeeze") == {}
    table = stats.column_table(frame, "dtd", "l2", lower_is_better=True, n_resamples=200)
    assert table.loc["mse", "rank"] == 1 and table.loc["dis", "rank"] == 2
    assert table.loc["dis", "ci_low"] < table.loc["dis", "mean"] < table.loc["dis", "ci_high"]
    assert table.loc["mse", "n_seeds"] == 2 and table.loc["mse", "n_images"] == 12


# ----------------------------------------------------------------------------- difference to a reference

def test_difference_to_a_deterministic_reference_separates_what_the_cell_intervals_cannot():
    """A method 0.1 above bicubic on every image, with a large image-to-image spread that both share:
    the two cells' intervals overlap, the paired difference's interval is near +0.1 and excludes 0."""
    rng = np.random.default_rng(3)
    hardness = rng.normal(20.0, 2.0, 200)                  # per image, shared by every method
    reference = hardness[None, :]                           # bicubic: one deterministic row
    method = hardness + 0.1 + rng.normal(0, 0.02, (2, 1)) + rng.normal(0, 0.05, (2, 200))
    cell_ref, cell_method = stats.cell_stats(reference), stats.cell_stats(method)
    assert cell_method["ci_low"] < cell_ref["ci_high"]     # overlapping: the cells cannot tell them apart
    diff = stats.difference_stats(method, reference)
    assert diff["ci_low"] > 0 and diff["mean"] == pytest.approx(0.1, abs=0.03)
    # the shared image spread cancels: the difference's interval is far narrower than a cell's
    assert diff["ci_high"] - diff["ci_low"] < (cell_method["ci_high"] - cell_method["ci_low"]) / 4
    assert diff["p_value"] < 1e-6 and diff["n_seeds"] == 2 and diff["n_images"] == 200
    below = stats.difference_stats(reference.repeat(2, axis=0) - 0.1, reference)   # the sign is method - reference
    assert below["ci_high"] < 0


def test_difference_needs_a_deterministic_reference_on_the_same_images():
    rng = np.random.default_rng(1)
    values, reference = rng.normal(size=(2, 5)), rng.normal(size=(1, 5))
    # a deterministic method written once per seed counts once: the same result as its single row
    assert stats.difference_stats(values, reference.repeat(3, axis=0)) == stats.difference_stats(values, reference)
    with pytest.raises(ValueError, match="deterministic"):
        stats.difference_stats(values, rng.normal(size=(2, 5)))
    with pytest.raises(ValueError, match="same images"):
        stats.difference_stats(values, np.ones((1, 4)))
