"""Evaluate stage on a tiny synthetic dataset: every strategy and seed, every column, n/a, batching, stats."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import load_params
from pipeline.errors import UserError
from pipeline.evaluation import metrics
from pipeline.evaluation.evaluate import COLUMNS, LOW_LEVEL, _finite, evaluate_dataset, selection
from pipeline.fileio import LABEL_CHARS, merge_record
from pipeline.nets import weights
from pipeline.nets.networks import Generator, save_generator
from pipeline.reporting.report import read_record

REPO = Path(__file__).resolve().parents[1]
DATASET = "tiny"
N, HR, SCALE = 10, 32, 4   # 10 images: a paired Wilcoxon test can reach p < 0.05 after Holm
SEEDS = [0, 1]


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _make_project(root: Path, weights_root: Path) -> None:
    """Crops + manifest (pipeline.data.imageset's format), a bicubic folder and a random generator folder."""
    from skimage import data as skdata
    photo = skdata.astronaut()
    base, rows = root / "data" / "crops" / DATASET, []
    for i in range(N):
        y, x = 20 * i, 30 * i + 100
        hr = photo[y:y + HR, x:x + HR]
        lr = cv2.resize(hr, (HR // SCALE, HR // SCALE), interpolation=cv2.INTER_AREA)
        image_id = f"img{i:02d}"
        _write_png(base / "test" / "hr" / f"{image_id}.png", hr)
        _write_png(base / "test" / "lr" / f"{image_id}.png", lr)
        rows.append({"id": image_id, "split": "test", "source": "astronaut", "x": x, "y": y, "size": HR,
                     "hr": f"test/hr/{image_id}.png", "lr": f"test/lr/{image_id}.png"})
    pd.DataFrame(rows).to_csv(base / "manifest.csv", index=False)
    models = root / "models" / DATASET
    (models / "bicubic" / "seed-0").mkdir(parents=True)
    (models / "bicubic" / "seed-0" / "config.json").write_text(json.dumps({"untrained": True, "scale": SCALE}))
    arch = {"blocks": 1, "width": 8, "upsample": "pixelshuffle", "scale": SCALE}
    for seed in SEEDS:
        torch.manual_seed(seed)
        generator = Generator(**arch)
        other = Generator(**arch)       # dis: another random generator
        folder = models / "dis" / f"seed-{seed}"
        folder.mkdir(parents=True)
        save_generator(other, arch, folder / "generator.pt")
        (folder / "config.json").write_text(json.dumps({"strategy": "dis", "seed": seed}))
        # adv is a copy of mse, seed by seed: two identical strategies
        for slug in ("mse", "adv"):
            folder = models / slug / f"seed-{seed}"
            folder.mkdir(parents=True)
            save_generator(generator, arch, folder / "generator.pt")
            (folder / "config.json").write_text(json.dumps({"strategy": slug, "seed": seed}))
    # the resolved backbones are shared with the other test files (fetched once per session)
    for name in ("alexnet", "vgg16"):
        weights.resolve(name, ["cache", "registry"], weights_root)
    (root / "weights").symlink_to(weights_root / "weights", target_is_directory=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory, weights_root) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evalproject")
    _make_project(root, weights_root)
    return root


def _params(batch_size: int) -> dict:
    params = copy.deepcopy(load_params(REPO / "params.yaml"))
    params["strategy"] = ["bicubic", "mse", "adv", "dis"]
    params["train"]["seeds"] = len(SEEDS)
    params["data"][DATASET] = {"stand_in_for": "sat"}    # compared with the paper's Sat column ranks
    params["eval"].update({"batch_size": batch_size, "networks": ["squeeze", "alex", "vgg"],
                           "weights_order": ["cache", "registry"]})
    params["train"]["device"] = "cpu"
    return params


@pytest.fixture(scope="module")
def batched(project) -> dict:
    return evaluate_dataset(_params(batch_size=3), DATASET, project)


NAMES = ("bicubic", "mse", "adv", "dis")


def test_metrics_json_has_every_strategy_and_column(project, batched):
    saved = read_record(project / "metrics" / f"{DATASET}.json")   # the numbers with their provenance merged in
    assert saved["dataset"] == DATASET and saved["n_test"] == N and saved["seconds"] > 0
    assert saved["n_seeds"] == len(SEEDS) and saved["seeds"] == SEEDS
    value_columns = [c for c in COLUMNS if c not in ("id", "strategy", "seed")]
    assert set(saved["strategies"]) == set(NAMES) == set(saved["std"]) == set(saved["stats"])
    for name in NAMES:
        assert list(saved["strategies"][name]) == value_columns
        assert list(saved["std"][name]) == value_columns
        for column in value_columns:
            value = saved["strategies"][name][column]
            if column.startswith("pe_squeeze"):
                assert value is None                      # n/a: SqueezeNet weights are not offline
                assert column not in saved["stats"][name]  # and left out of the stats
            else:
                assert isinstance(value, float) and math.isfinite(value)
    assert saved["networks"]["squeeze"]["available"] is False and saved["networks"]["squeeze"]["reason"]
    assert saved["networks"]["alex"]["available"] and len(saved["networks"]["alex"]["sha256"]) == 64
    selection = saved["selection"]
    assert selection["networks_used"] == ["pe_alex", "pe_alex_lin", "pe_vgg", "pe_vgg_lin"]
    max_pe = {n: max(saved["strategies"][n][c] for c in selection["networks_used"]) for n in NAMES}
    assert selection["max_pe"] == pytest.approx(max_pe)
    assert selection["winner"] == min(max_pe, key=max_pe.get)
    # the deviations from the paper profile: the small test set and SqueezeNet's missing weights included
    found = {d["what"]: d for d in saved["deviations"]}
    assert found[f"{DATASET}: test images"]["ours"] == N and found[f"{DATASET}: test images"]["paper"] == 1000
    assert found["squeeze perceptual network"]["kind"] == "network"
    assert {"train.iterations", "crop.hr_size"} <= {d.get("key") for d in saved["deviations"]}
    # bicubic beats an untrained random generator on every metric
    assert saved["strategies"]["bicubic"]["l2"] < saved["strategies"]["mse"]["l2"]
    assert saved["strategies"]["bicubic"]["pe_alex_lin"] < saved["strategies"]["mse"]["pe_alex_lin"]


def _leaves(record: dict, prefix: str = ""):
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_metrics_files_hold_numbers_and_short_labels_and_the_text_sits_beside_them(project, batched):
    """metrics/<ds>.json: numbers and labels of at most LABEL_CHARS; the sentences, sha256 and deviations in
    metrics/<ds>-provenance.json; merged, the two are the stage's whole record; one dvc metrics file per method."""
    numbers = json.loads((project / "metrics" / f"{DATASET}.json").read_text())
    provenance = json.loads((project / "metrics" / f"{DATASET}-provenance.json").read_text())
    for key, value in _leaves(numbers):
        values = value if isinstance(value, list) else [value]
        for item in values:
            assert item is None or isinstance(item, (bool, int, float)) or len(item) <= LABEL_CHARS, key
    assert numbers["strategies"] == batched["strategies"] and numbers["selection"]["winner"] == batched["selection"]["winner"]
    assert set(provenance) >= {"conventions", "deviations", "verdict"}
    assert provenance["networks"]["alex"]["sha256"] == batched["networks"]["alex"]["sha256"]
    assert merge_record(numbers, provenance) == json.loads(json.dumps(_finite(batched)))
    headlines = sorted((project / "metrics" / DATASET).glob("*.json"))
    assert [p.stem for p in headlines] == sorted(NAMES)
    for path in headlines:
        row = json.loads(path.read_text())
        means = batched["strategies"][path.stem]
        assert set(row) == {"psnr_y", "ssim_y", "l2", "ssim_error", "pe_alex_lin", "pe_vgg_lin", "max_pe", "rule_share"}
        assert row["psnr_y"] == means["psnr_y"] and row["max_pe"] == batched["selection"]["max_pe"][path.stem]
    shares = {p.stem: json.loads(p.read_text())["rule_share"] for p in headlines}
    assert max(shares, key=shares.get) == max(batched["selection"]["frequencies"], key=batched["selection"]["frequencies"].get)


def test_means_are_over_seeds_and_images_with_intervals_that_bracket_them(project, batched):
    saved = json.loads((project / "metrics" / f"{DATASET}.json").read_text())
    table = pd.read_csv(project / "results" / DATASET / "per_image.csv", dtype={"id": str})
    for name in NAMES:
        for column, cell in saved["stats"][name].items():
            mean = saved["strategies"][name][column]
            assert cell["ci_low"] <= mean <= cell["ci_high"], (name, column)
            assert cell["ci_low"] < cell["ci_high"]           # images differ: a real interval
            assert mean == pytest.approx(table[table["strategy"] == name][column].mean(), rel=1e-9)
        seed_means = table[table["strategy"] == name].groupby("seed")["pe_vgg"].mean()
        if name == "bicubic":                                 # deterministic: one seed, no seed sd
            assert saved["stats"][name]["pe_vgg"]["seed_sd"] is None
        else:
            assert saved["stats"][name]["pe_vgg"]["seed_sd"] == pytest.approx(seed_means.std(ddof=1), rel=1e-9)
            assert saved["stats"][name]["pe_vgg"]["seed_sd"] > 0    # two different random generators


def test_identical_strategies_tie_and_a_clearly_worse_one_is_not_tied(batched):
    for column in ("l2", "pe_alex_lin", "pe_vgg"):
        stats = {name: batched["stats"][name][column] for name in NAMES}
        assert stats["bicubic"]["rank"] == 1 and stats["bicubic"]["tied_with_best"] and stats["bicubic"]["p_holm"] is None
        # random generators are far worse than bicubic on all 10 images: separated after Holm
        for name in ("mse", "adv", "dis"):
            assert not stats[name]["tied_with_best"] and stats[name]["rank"] > 1 and stats[name]["p_holm"] < 0.05
        # adv is mse's copy: the same rank and p-value
        assert stats["mse"]["rank"] == stats["adv"]["rank"] and stats["mse"]["p_holm"] == stats["adv"]["p_holm"]
        assert batched["strategies"]["mse"][column] == batched["strategies"]["adv"][column]
    # higher is better: PSNR's best is bicubic too
    assert batched["stats"]["bicubic"]["psnr"]["rank"] == 1


def test_selection_frequencies_and_rank_agreement(batched):
    selection = batched["selection"]
    assert selection["frequencies"] == {"bicubic": 1.0}        # bicubic wins every resample
    assert selection["gcn_winner"] in ("adv", "dis") and "mse" not in selection["gcn_frequencies"]
    assert sum(selection["gcn_frequencies"].values()) == pytest.approx(1.0)
    assert selection["gcn_winner"] == max(selection["gcn_frequencies"], key=selection["gcn_frequencies"].get)
    # tau against the paper's Sat values (the test set stands in for Sat): mse, adv, dis have paper rows
    agreement = batched["rank_agreement"]
    assert set(agreement) == {"l2", "ssim_error", "pe_squeeze", "pe_squeeze_lin", "pe_alex", "pe_alex_lin",
                              "pe_vgg", "pe_vgg_lin"}
    for column, result in agreement.items():
        if column.startswith("pe_squeeze"):
            assert result["n"] == 0 and math.isnan(result["tau"]) and "cannot be compared" in result["verdict"]
        else:   # 3 methods: even a perfect agreement has p = 1/3, so no column is counted as agreeing or not
            assert result["n"] == 3 and -1 <= result["tau"] <= 1 and 0 < result["p_value"] <= 1
            assert result["min_p"] == pytest.approx(1 / 3)
            assert result["verdict"].startswith(f"{DATASET} ") and "too few methods to test" in result["verdict"]
    assert batched["verdict"].startswith(f"{DATASET}: too few methods to test the agreement with the paper (3 methods")
    assert "of 6 columns" not in batched["verdict"]
    # the column deciding each method's maximum PE, and our scale-free variant with its frequencies
    used = selection["networks_used"]
    means = batched["strategies"]
    assert selection["deciding_column"] == {m: max(used, key=lambda c: means[m][c]) for m in means}
    relative = selection["relative"]
    assert relative["reference"] == "bicubic" and relative["max_relative_pe"]["bicubic"] == pytest.approx(1.0)
    assert relative["max_relative_pe"]["mse"] == pytest.approx(max(means["mse"][c] / means["bicubic"][c] for c in used))
    assert relative["winner"] == min(relative["max_relative_pe"], key=relative["max_relative_pe"].get)
    assert sum(relative["frequencies"].values()) == pytest.approx(1.0)
    assert sum(relative["gcn_frequencies"].values()) == pytest.approx(1.0) and "mse" not in relative["gcn_frequencies"]
    assert set(relative["deciding_column"]) == {"mse", "adv", "dis"}


def test_per_image_csv_and_sr_images_agree(project, batched):
    table = pd.read_csv(project / "results" / DATASET / "per_image.csv", dtype={"id": str})
    assert list(table.columns) == list(COLUMNS)
    # one row per image x strategy x seed; bicubic (deterministic) once
    assert len(table) == N * (1 + 3 * len(SEEDS))
    assert table.groupby("strategy")["seed"].unique().map(sorted).to_dict() == {
        "bicubic": [0], "mse": SEEDS, "adv": SEEDS, "dis": SEEDS}
    assert not table.duplicated(["id", "strategy", "seed"]).any()
    assert table["pe_squeeze"].isna().all() and table["pe_squeeze_lin"].isna().all()
    assert table[["pe_alex", "pe_vgg_lin", "psnr_y"]].notna().all().all()
    # the two seeds' generators differ, so their SR images and scores differ
    mse = table[table["strategy"] == "mse"].set_index(["seed", "id"])["l2"]
    assert not np.allclose(mse.loc[0].to_numpy(), mse.loc[1].to_numpy())
    for _, row in table[table["seed"] == SEEDS[0]].iterrows():     # the saved PNGs are the first seed's
        sr_path = project / "results" / DATASET / "sr" / row["strategy"] / f"{row['id']}.png"
        sr = cv2.cvtColor(cv2.imread(str(sr_path)), cv2.COLOR_BGR2RGB)
        hr = cv2.cvtColor(cv2.imread(str(project / "data/crops" / DATASET / "test/hr" / f"{row['id']}.png")),
                          cv2.COLOR_BGR2RGB)
        assert sr.shape == (HR, HR, 3)
        for column, value in metrics.image_metrics(sr, hr, SCALE).items():   # scored as saved, with scale
            assert row[column] == pytest.approx(value, rel=1e-9), column
        assert row["l2"] == pytest.approx(4 * row["mse"], rel=1e-9)         # the paper's L2 is on [-1,1]
    means = table.groupby("strategy")["pe_vgg"].mean()
    assert means["mse"] == pytest.approx(batched["strategies"]["mse"]["pe_vgg"], rel=1e-9)
    assert sorted(p.name for p in (project / "results" / DATASET / "sr").iterdir()) == sorted(NAMES)


def test_metrics_json_states_the_paper_conventions(batched):
    conventions = batched["conventions"]
    assert set(LOW_LEVEL) <= set(conventions)
    assert "[-1,1]" in conventions["l2"] and "7x7 uniform" in conventions["ssim_error"]
    assert f"{SCALE}-pixel border" in conventions["ssim_y"] and "rgb2ycbcr" in conventions["psnr_y"]
    assert LOW_LEVEL[:2] == ("l2", "ssim_error")


def test_selection_minimises_the_maximum_pe():
    means = {"a": {"pe_alex": 0.5, "pe_vgg": 0.9, "l2": 0.0},       # max 0.9
             "b": {"pe_alex": 0.8, "pe_vgg": 0.7, "l2": 9.0},       # max 0.8: the winner
             "c": {"pe_alex": 0.1, "pe_vgg": 1.5, "l2": 0.0}}       # max 1.5 (best mean, worst max)
    chosen = selection(means, ["pe_alex", "pe_vgg"])
    assert chosen["winner"] == "b" and chosen["max_pe"] == {"a": 0.9, "b": 0.8, "c": 1.5}
    assert chosen["networks_used"] == ["pe_alex", "pe_vgg"] and "maximum PE" in chosen["rule"]
    assert selection(means, ["pe_alex"])["winner"] == "c"
    assert selection(means, []) == {"rule": chosen["rule"], "winner": None, "max_pe": {}, "networks_used": []}


def test_finite_replaces_inf_and_nan_in_nested_values():
    value = {"a": math.inf, "b": [1.0, -math.inf, {"c": float("nan")}], "d": "text", "e": 2, "f": 0.5}
    assert _finite(value) == {"a": None, "b": [1.0, None, {"c": None}], "d": "text", "e": 2, "f": 0.5}


def test_one_image_at_a_time_gives_the_same_numbers(project, batched):
    single = evaluate_dataset(_params(batch_size=1), DATASET, project)
    for name in NAMES:
        for column, value in batched["strategies"][name].items():
            if value is None:
                assert single["strategies"][name][column] is None
            else:
                assert single["strategies"][name][column] == pytest.approx(value, rel=1e-4, abs=1e-6)


def test_missing_strategy_folder_names_the_train_stage(project):
    params = _params(batch_size=3)
    params["strategy"] = ["mse", "dis,rec"]
    with pytest.raises(UserError, match=r"dis\+rec.*train"):
        evaluate_dataset(params, DATASET, project)
    params["strategy"], params["train"]["seeds"] = ["mse"], [0, 5]     # a seed that was not trained
    with pytest.raises(UserError, match=r"mse/seed-5.*seed 5.*train"):
        evaluate_dataset(params, DATASET, project)


def test_stage_rejects_an_unknown_dataset():
    done = subprocess.run([sys.executable, "stages/evaluate.py", "--params", "params.yaml", "--dataset", "nope"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "nope" in done.stderr and "Traceback" not in done.stderr
