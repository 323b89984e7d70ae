"""The campaign's verdicts: each claim is supported, refuted or undecided from paired differences on the data."""

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import verdicts

PARAMS = {"datasets": ["nat", "air"],
          "data": {"nat": {"stand_in_for": "imagenet"}, "air": {"stand_in_for": "sat"}}}


def _rows(dataset: str, method: str, values: np.ndarray, metric: str) -> list[dict]:
    return [{"dataset": dataset, "method": method, "seed": s, "image": f"img-{i:03d}", "metric": metric,
             "value": float(v)} for s, row in enumerate(values) for i, v in enumerate(row)]


def frame(dataset: str, shifts: dict[str, float], n_seeds: int = 3, n_images: int = 64, noise: float = 0.02,
          seed: int = 0) -> pd.DataFrame:
    """Per-image LPIPS-like errors: a hard/easy image effect shared by all methods, a per-method shift, noise;
    PSNR-Y moves against the error (a lower error, a higher PSNR-Y)."""
    rng = np.random.default_rng(seed)
    image_effect = rng.uniform(0.2, 0.5, size=n_images)
    rows = []
    for method, shift in shifts.items():
        values = image_effect + shift + rng.normal(0, noise, size=(n_seeds, n_images))
        rows += _rows(dataset, method, values, verdicts.PRIMARY)
        rows += _rows(dataset, method, values * 0.8, verdicts.SECONDARY)
        rows += _rows(dataset, method, 30 - 20 * values, verdicts.COST)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shift, expected", [(-0.05, "supported"), (+0.05, "refuted"), (0.0, "undecided")])
def test_adv_rec_against_srgan_follows_the_sign_and_size_of_the_difference(shift, expected):
    data = frame("nat", {"srgan": 0.0, "adv,rec": shift})
    result = verdicts.adv_rec_vs_srgan(data, "nat", "natural")
    assert result.verdict == expected
    assert (result.seeds, result.images) == (3, 64)
    assert "PSNR-Y" in result.evidence and "VGG-lin" in result.evidence


def test_learned_extractor_against_mse_needs_one_variant_clearly_better():
    better = verdicts.learned_vs_mse(frame("nat", {"mse": 0.0, "dis": 0.03, "adv": -0.04}), "nat", "natural")
    assert better.verdict == "supported" and better.evidence.startswith("adv - mse")
    worse = verdicts.learned_vs_mse(frame("nat", {"mse": 0.0, "dis": 0.03, "adv": 0.04}), "nat", "natural")
    assert worse.verdict == "refuted"
    mixed = verdicts.learned_vs_mse(frame("nat", {"mse": 0.0, "dis": 0.03, "adv": 0.0}), "nat", "natural")
    assert mixed.verdict == "undecided"


def test_thesis_compares_the_advantage_on_aerial_with_the_one_on_natural_images():
    natural = frame("nat", {"srgan": 0.0, "adv,rec": -0.01}, seed=1)
    larger = frame("air", {"srgan": 0.0, "adv,rec": -0.06}, seed=2)
    (result,) = verdicts.thesis(pd.concat([natural, larger]), PARAMS)
    assert (result.domain, result.verdict) == ("aerial", "supported")
    smaller = frame("air", {"srgan": 0.0, "adv,rec": +0.04}, seed=2)
    assert verdicts.thesis(pd.concat([natural, smaller]), PARAMS)[0].verdict == "refuted"


def test_pairs_only_the_seeds_both_methods_have_and_skips_missing_methods():
    data = frame("nat", {"srgan": 0.0, "adv,rec": -0.05})
    data = data[~((data["method"] == "srgan") & (data["seed"] == 2))]
    assert verdicts.adv_rec_vs_srgan(data, "nat", "natural").seeds == 2
    assert verdicts.adv_rec_vs_srgan(frame("nat", {"mse": 0.0}), "nat", "natural") is None
    rows = verdicts.verdicts(PARAMS, {"nat": frame("nat", {"srgan": 0.0, "adv,rec": -0.05, "mse": 0.0})})
    assert [(r["claim"].split()[0], r["domain"]) for r in rows] == [("adv,rec", "natural"), ("a", "natural")]
    assert "| **supported** |" in verdicts.markdown(rows)


def test_a_verdict_against_an_srgan_worse_than_bicubic_says_srgan_did_not_train():
    failed = frame("nat", {"bicubic": 0.0, "srgan": 0.2, "adv,rec": -0.05})
    result = verdicts.adv_rec_vs_srgan(failed, "nat", "natural")
    assert result.verdict == "supported" and result.caveat.startswith("srgan did not train here")
    assert "PSNR-Y (-4.00" in result.caveat           # 20 dB per unit of error in `frame`: 0.2 -> -4 dB
    assert "(caveat: srgan did not train" in verdicts.markdown([vars(result)])
    trained = frame("nat", {"bicubic": 0.0, "srgan": -0.1, "adv,rec": -0.15})    # perceptually better than bicubic
    assert verdicts.adv_rec_vs_srgan(trained, "nat", "natural").caveat == ""
    no_bicubic = frame("nat", {"srgan": 0.2, "adv,rec": -0.05})
    assert verdicts.adv_rec_vs_srgan(no_bicubic, "nat", "natural").caveat == ""
    aerial = frame("air", {"bicubic": 0.0, "srgan": -0.1, "adv,rec": -0.12}, seed=2)
    (contrast,) = verdicts.thesis(pd.concat([failed, aerial]), PARAMS)
    assert contrast.caveat == "srgan did not train on natural images (worse than bicubic)"
