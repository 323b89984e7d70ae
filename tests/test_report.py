"""The report stage on a synthetic but schema-correct workspace, rendered in headless Chromium."""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from skimage import data as skdata

from markupsafe import escape as html_escape

from pipeline import paths
from pipeline.config import load_params
from pipeline.errors import UserError
from pipeline.nets import strategies
from pipeline.reporting import deviations, landing, tables
from pipeline.reporting.report import (MIN_ENLARGE, MIN_ZOOM_WINDOW, build_report, list_versions, params_hash, report_identity,
                             report_version, zoom_box)
from test_tables import OFFLINE_REASON as SQUEEZE_REASON  # what pipeline.nets.weights records without weights or network

REPO = Path(__file__).resolve().parents[1]
HR, SCALE = 32, 4
METRIC_KEYS = ("l2", "ssim", "ssim_error", "psnr", "psnr_y", "pe_squeeze", "pe_squeeze_lin",
               "pe_alex", "pe_alex_lin", "pe_vgg", "pe_vgg_lin")
PHOTOS = {"sample-natural": "astronaut", "sample-texture": "brick", "sample-aerial": "coffee"}


# ---------------------------------------------------------------- synthetic workspace

def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def default_params() -> dict:
    return load_params(REPO / "params.yaml")


TIED = ("dis", "adv")      # identical per-image values, the best L2 on the first dataset
WORSE = "bicubic"          # clearly worse L2 there


def make_workspace(root: Path, params: dict, n_test: int = 10, squeeze_missing: bool = True, seed: int = 0,
                   seeds: tuple[int, ...] = (0, 1), names: tuple[str, ...] = tuple(strategies.NAMES),
                   below_bicubic: bool = False) -> None:
    """Files in the layout and schemas the crop/train/evaluate stages write, with small real crops.

    Per-image metrics: a method's base value x an image effect x a seed effect + noise; the metrics
    JSON is computed from them by the evaluate stage's own functions (means, stats, selection, tau).
    On the first dataset, TIED have identical per-image values with the lowest L2. ``below_bicubic``:
    bicubic has the best PSNR-Y and perceptual errors everywhere (a smoke run's numbers).
    """
    from pipeline.evaluation import evaluate, metrics as metric_fns
    rng = np.random.default_rng(seed)
    names = list(names)
    _write_json(root / paths.WEIGHTS / "manifest.json", {
        "squeeze": {"available": not squeeze_missing, "source": None, "sha256": None,
                    "reason": SQUEEZE_REASON if squeeze_missing else None},
        "alex": {"available": True, "source": "registry:alexnet", "sha256": "a" * 64},
        "vgg": {"available": True, "source": "torchvision", "sha256": "b" * 64},
        "vgg19": {"available": True, "source": "torchvision", "sha256": "c" * 64},
    })
    for d_index, ds in enumerate(params["datasets"]):
        photo = getattr(skdata, PHOTOS.get(ds, "astronaut"))()
        photo = np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo[..., :3]
        crops = root / paths.crops_dir(ds)
        rows, ids = [], []
        for i in range(n_test):
            cid = f"{i:05d}"
            y, x = 20 + 23 * i, 30 + 31 * i
            hr = np.ascontiguousarray(photo[y:y + HR, x:x + HR])
            lr = cv2.resize(hr, (HR // SCALE, HR // SCALE), interpolation=cv2.INTER_AREA)
            _write_png(crops / "test" / "hr" / f"{cid}.png", hr)
            _write_png(crops / "test" / "lr" / f"{cid}.png", lr)
            rows.append({"id": cid, "split": "test", "source": PHOTOS.get(ds, "x"), "x": x, "y": y, "size": HR,
                         "hr": f"test/hr/{cid}.png", "lr": f"test/lr/{cid}.png"})
            ids.append(cid)
            up = cv2.resize(lr, (HR, HR), interpolation=cv2.INTER_CUBIC)
            for s_index, name in enumerate(names):
                noise = rng.normal(0, 3 * s_index, up.shape)
                sr = np.clip(up.astype(float) + noise, 0, 255).astype(np.uint8)
                _write_png(root / paths.results_dir(ds) / "sr" / strategies.slug(name) / f"{cid}.png", sr)
        with open(crops / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _write_json(crops / "info.json", {"dataset": ds, "counts": {"train": 60, "test": n_test}, "hr_size": HR,
                                          "scale": SCALE, "lr_size": HR // SCALE, "downscale": "bicubic",
                                          "skipped": {}, "seconds": 1.5 + d_index})
        n_files = 25 if d_index == 0 else 1    # a long file list is cut in the page
        _write_json(root / paths.raw_dir(ds) / "SOURCE.json", {
            "type": "skimage", "origin": f"skimage.data.{PHOTOS.get(ds, 'x')}", "license": "BSD-3-Clause",
            "files": [{"path": f"{PHOTOS.get(ds, 'x')}{k}.png", "sha256": f"{d_index}" * 63 + f"{k % 10}",
                       "size": 1234} for k in range(n_files)]})

        effect = rng.uniform(0.8, 1.2, n_test)         # some test images are harder than others
        per_image, bases = [], {}
        for name in names:
            run_seeds = seeds[:1] if name == "bicubic" else seeds     # bicubic is deterministic
            base = {k: float(rng.uniform(0.01, 0.5)) for k in METRIC_KEYS}
            base["psnr"], base["psnr_y"] = float(rng.uniform(18, 30)), float(rng.uniform(18, 30))
            if d_index == 0 and name in TIED:
                base["l2"] = 0.005
            if d_index == 0 and name == WORSE:
                base["l2"] = 0.6      # above every other method's draw (at most 0.5), whatever the registry holds
            if below_bicubic and name == "bicubic":   # better than every draw of a trained method
                base.update({k: 0.005 for k in METRIC_KEYS if k.startswith("pe_")}, psnr=35.0, psnr_y=35.0)
            bases[name] = base
            for s_ in run_seeds:
                seed_effect = {k: 1 + rng.normal(0, 0.02) for k in METRIC_KEYS}
                for i, cid in enumerate(ids):
                    row = {"id": cid, "strategy": name, "seed": s_}
                    for k in METRIC_KEYS:
                        row[k] = base[k] * effect[i] * seed_effect[k] * (1 + rng.normal(0, 0.01))
                    if squeeze_missing:
                        row["pe_squeeze"] = row["pe_squeeze_lin"] = None
                    per_image.append(row)
        if d_index == 0:    # TIED[1] is an exact copy of TIED[0]
            copies = [{**r, "strategy": TIED[1]} for r in per_image if r["strategy"] == TIED[0]]
            per_image = [r for r in per_image if r["strategy"] != TIED[1]] + copies
        table = pd.DataFrame(per_image, columns=["id", "strategy", "seed", *METRIC_KEYS])
        means, stds = {}, {}
        for name in names:
            part = table[table["strategy"] == name]
            means[name], stds[name] = {}, {}
            for k in METRIC_KEYS:
                values = [None if pd.isna(v) else float(v) for v in part[k]]
                means[name][k], stds[name][k] = metric_fns.aggregate(values, k)
        used = ["pe_alex", "pe_alex_lin", "pe_vgg", "pe_vgg_lin"] + ([] if squeeze_missing else ["pe_squeeze", "pe_squeeze_lin"])
        frame = tables.per_image_frame(table, ds)
        rule = evaluate.selection(means, used)
        rule.update(evaluate.selection_frequencies(frame, ds, used, names))
        agreement = evaluate.rank_agreement(means, params, ds)
        record = {
            "dataset": ds, "n_test": n_test, "n_seeds": len(seeds), "seeds": list(seeds), "seconds": 4.0, "device": "cpu",
            "strategies": means, "std": stds, "stats": evaluate.uncertainty(frame, ds, names),
            "networks": {
                "squeeze": ({"available": False, "reason": SQUEEZE_REASON,
                             "source": None, "sha256": None} if squeeze_missing
                            else {"available": True, "source": "torchvision", "sha256": "d" * 64}),
                "alex": {"available": True, "source": "registry:alexnet", "sha256": "a" * 64},
                "vgg": {"available": True, "source": "torchvision", "sha256": "b" * 64}},
            "selection": rule, "rank_agreement": agreement, "verdict": tables.dataset_verdict(ds, agreement),
            "conventions": {"ssim_error": "(1 - SSIM) / 2"},
        }
        _write_json(root / paths.metrics_path(ds), evaluate._finite(record))
        results = root / paths.results_dir(ds)
        table.to_csv(results / "per_image.csv", index=False, na_rep="")

        for name in names:
            for s_ in seeds:
                folder = root / paths.model_dir(ds, strategies.slug(name), s_)
                folder.mkdir(parents=True, exist_ok=True)
                if name == "bicubic":
                    _write_json(folder / "config.json", {"strategy": name, "seed": s_, "untrained": True})
                    continue
                iters = params["train"]["iterations"]
                it = np.arange(1, iters + 1)
                log = {"iteration": it, "loss_g": 1.0 / np.sqrt(it) + rng.uniform(0, 0.05, iters),
                       "loss_content": 0.8 / np.sqrt(it)}
                if name.startswith(("adv", "dis", "srgan")):
                    log["loss_d"] = 1.4 - 0.3 * it / iters
                with open(folder / "log.csv", "w", newline="") as fh:
                    writer = csv.writer(fh)
                    writer.writerow(log)
                    writer.writerows(zip(*log.values()))
                config = {"strategy": name, "seed": s_, "iterations": iters, "device": "cpu", "seconds": 12.0,
                          "seconds_per_iteration": 12.0 / iters, "precision": "bf16"}
                if name in ("cla", "srgan"):
                    config["weights"] = [{"network": "vgg19", "available": True, "source": "torchvision:url",
                                          "sha256": "c" * 64}]
                _write_json(folder / "config.json", config)


# ---------------------------------------------------------------- HTML helpers

class _Cells(HTMLParser):
    """Cells of every `tr.ours` row of a metrics table: {(dataset, strategy): [(classes, text, title)]}."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.dataset, self.row, self.cell = table_id, False, None, None, None
        self.rows: dict[tuple[str, str], list] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.inside = attrs.get("id") == self.table_id
        if not self.inside:
            return
        if tag == "tbody":
            self.dataset = attrs.get("data-dataset")
        elif tag == "tr" and "ours" in (attrs.get("class") or "").split():
            self.row = self.rows.setdefault((self.dataset, attrs["data-strategy"]), [])
        elif tag == "td" and self.row is not None:
            self.cell = [attrs.get("class") or "", "", None]
        elif tag == "span" and self.cell is not None and attrs.get("title"):
            self.cell[2] = attrs["title"]

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif tag == "td" and self.cell is not None:
            self.row.append((self.cell[0].split(), " ".join(self.cell[1].split()), self.cell[2]))
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, text):
        if self.cell is not None:
            self.cell[1] += text


def metric_cells(html: str, table: int) -> dict:
    parser = _Cells(f"metrics-{table}")
    parser.feed(html)
    return parser.rows


# ---------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace")
    params = default_params()
    make_workspace(root, params)
    first = build_report(params, root, version="first")
    other = copy.deepcopy(params)
    other["train"]["iterations"] = params["train"]["iterations"] + 10
    other["data"]["sample-natural"]["description"] += " (second)"     # a parameter compare.html folds
    second = build_report(other, root, version="second")
    return root, params, first, second


def test_writes_versioned_pages_summary_index_and_compare(built):
    root, params, first, second = built
    reports = root / "reports"
    assert first == reports / "first" / "index.html" and second == reports / "second" / "index.html"
    for name in ("first", "second"):
        summary = json.loads((reports / name / "summary.json").read_text())
        assert set(summary["datasets"]) == set(params["datasets"])
        for ds, entry in summary["datasets"].items():
            metrics = json.loads((root / paths.metrics_path(ds)).read_text())
            assert entry["winner"] == metrics["selection"]["winner"]
            assert set(entry["strategies"]) == set(strategies.NAMES)
    assert [v["folder"] for v in list_versions(reports)] == ["second", "first"]
    index = (reports / "index.html").read_text()
    assert 'href="first/index.html"' in index and 'href="second/index.html"' in index
    compare = (reports / "compare.html").read_text()
    # the parameter that differs between the two versions is named, the shared ones are not
    assert "train.iterations" in compare and "train.batch_size" not in compare
    for ds in params["datasets"]:
        assert f'id="compare-{ds}"' in compare


def test_page_is_self_contained(built):
    _, _, first, _ = built
    html = first.read_text()
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)="(https?:)?//', html)
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert "<style>" in html


def test_tables_show_paper_values_differences_and_na(built):
    root, params, first, _ = built
    html = first.read_text()
    cells = metric_cells(html, 5)
    columns = [c.key for c in tables.COLUMNS]
    paper = {(r["dataset"], r["method"]): r for r in csv.DictReader(open(paths.PAPER_RESULTS))}
    for ds in params["datasets"]:
        metrics = json.loads((root / paths.metrics_path(ds)).read_text())
        for name in strategies.NAMES:
            row = cells[(ds, name)]
            assert len(row) == len(columns) + 1
            by_key = dict(zip(columns, row))
            # n/a for the unavailable network, with its reason, never a number
            for key in ("pe_squeeze", "pe_squeeze_lin"):
                classes, text, title = by_key[key]
                assert text.startswith("n/a") and "na-cell" in classes and "SqueezeNet" in title
            value = metrics["strategies"][name]["pe_alex_lin"]
            assert by_key["pe_alex_lin"][1].startswith(f"{value:.3f}")
        # best marks: the methods the paired test cannot separate from the best (Table 5 holds every method)
        bold = {name for name in strategies.NAMES if "best" in dict(zip(columns, cells[(ds, name)]))["l2"][0]}
        assert bold == {n for n in strategies.NAMES if metrics["stats"][n]["l2"]["tied_with_best"]}
    # the paper's value and our difference for a stand-in dataset: sample-aerial stands in for sat
    ours = json.loads((root / paths.metrics_path("sample-aerial")).read_text())["strategies"]["srgan"]["l2"]
    theirs = float(paper[("sat", "srgan")]["l2"])
    assert f"{theirs:.3f} <span title=\"ours - paper\">({ours - theirs:+.3f})</span>" in html
    assert "paper (other data)" in html and "stand-in for Sat" in html


def test_cells_show_intervals_seed_sd_and_ties(built):
    root, params, first, _ = built
    html = first.read_text()
    cells = metric_cells(html, 5)
    columns = [c.key for c in tables.COLUMNS]
    decimals = {c.key: c.decimals for c in tables.COLUMNS}
    for ds in params["datasets"]:
        metrics = json.loads((root / paths.metrics_path(ds)).read_text())
        for name in strategies.NAMES:
            by_key = dict(zip(columns, cells[(ds, name)]))
            for key, spread in metrics["stats"][name].items():
                d = decimals[key]
                text = by_key[key][1]
                # the mean, then its 95% interval, visible in the cell (not only in a tooltip)
                assert text.startswith(f"{metrics['strategies'][name][key]:.{d}f}")
                assert f"[{spread['ci_low']:.{d}f}, {spread['ci_high']:.{d}f}]" in text
                assert ("seed sd" in text) == (name != "bicubic")     # bicubic: one (deterministic) seed
    # the first dataset: two identical methods share the best L2 (both bold, rank 1, one marked tie),
    # a clearly worse one is neither bold nor rank 1
    ds = params["datasets"][0]
    l2 = {name: dict(zip(columns, cells[(ds, name)]))["l2"] for name in strategies.NAMES}
    assert {n for n, (classes, _, _) in l2.items() if "best" in classes} == set(TIED)
    rank = {n: int(re.search(r"#(\d+)", text).group(1)) for n, (_, text, _) in l2.items()}
    assert all(rank[n] == 1 for n in TIED) and sum("#1 tie" in l2[n][1] for n in TIED) == 1
    assert "best" not in l2[WORSE][0] and rank[WORSE] == len(strategies.NAMES)    # the largest L2
    assert "paired Wilcoxon over test images, Holm-corrected, alpha 0.05" in html


def test_selection_frequencies_and_rank_agreement_are_shown(built):
    root, params, first, _ = built
    html = first.read_text()
    summary = json.loads((first.parent / "summary.json").read_text())
    for ds in params["datasets"]:
        metrics = json.loads((root / paths.metrics_path(ds)).read_text())
        rule = metrics["selection"]
        share = rule["frequencies"][rule["winner"]]
        assert f"{rule['winner']} wins in {share:.0%} of bootstrap resamples" in html
        assert f"{rule['gcn_winner']} wins in {rule['gcn_frequencies'][rule['gcn_winner']]:.0%} of bootstrap " \
               "resamples among the GCN variants" in html
        assert html_escape(metrics["verdict"]) in html
        row = re.search(rf'<tr data-dataset="{ds}">(.*?)</tr>', html, re.S).group(1)
        for column in ("l2", "pe_alex_lin", "pe_vgg"):
            tau = metrics["rank_agreement"][column]["tau"]
            assert f"tau {tau:.2f}" in row
        # summary.json: intervals, frequencies and taus for the comparison of versions
        entry = summary["datasets"][ds]
        assert entry["winner_frequencies"] == pytest.approx(rule["frequencies"])
        assert entry["rank_agreement"]["l2"]["tau"] == pytest.approx(metrics["rank_agreement"]["l2"]["tau"])
        assert entry["n_seeds"] == 2 and entry["verdict"] == metrics["verdict"]
        for name in strategies.NAMES:
            low, high = entry["strategies"][name]["ci"]["pe_alex"]
            assert low <= entry["strategies"][name]["pe_alex"] <= high
    assert summary["datasets"][params["datasets"][0]]["strategies"]["adv"]["tied_with_best"][0] == "l2"


def test_claims_that_cannot_fail_are_not_printed_as_findings(tmp_path):
    """Table 3's methods only, as the CPU reference runs: 4 methods with paper values (Kendall's test cannot reach
    p < 0.05), one GCN variant (no choice among the GCN variants). The page says so, and names, beside the
    selection rule, the column deciding its maximum and our scale-free variant with its winner frequencies."""
    params = {**default_params(), "datasets": ["sample-aerial"]}
    make_workspace(tmp_path, params, names=("bicubic", "mse", "adv,mse", "srgan", "adv,rec"))
    page = build_report(params, tmp_path, version="claims").read_text()
    record = json.loads((tmp_path / paths.metrics_path("sample-aerial")).read_text())
    agreement = page.split('<section id="agreement">')[1].split("</section>")[0]
    assert agreement.count('<span class="na">too few methods to test</span>') == sum(
        1 for v in record["rank_agreement"].values() if v["tau"] is not None)
    assert "sample-aerial: too few methods to test the agreement with the paper (4 methods" in agreement
    assert " of 6 columns" not in page and "agree with the paper on 0" not in page
    glance = page.split('<section id="glance">')[1].split("</section>")[0]
    assert "adv,rec is the only candidate among the GCN variants: nothing to select, no win" in glance
    assert "among the GCN variants" not in glance.replace("the only candidate among the GCN variants", "")
    relative = record["selection"]["relative"]
    share = relative["frequencies"][relative["winner"]]
    assert (f"scale-free variant (ours, PE relative to bicubic&#39;s): {relative['winner']} wins in {share:.0%} "
            "of bootstrap resamples") in glance
    assert "the rule&#39;s maximum PE is " in glance
    table5 = page.split('<section id="table-5"')[1].split("</section>")[0]
    assert "the rule&#39;s maximum PE is " in table5 and "scale-free variant (ours" in table5


def test_run_card_lists_sources_weights_timings_and_approximations(built):
    _, params, first, _ = built
    html = first.read_text()
    assert "0" * 63 + "4" in html and "c" * 64 in html      # data and weight checksums
    assert "astronaut19.png" in html and "astronaut20.png" not in html and "and 5 more files" in html
    assert "(1 - SSIM) / 2" in html                         # the evaluate stage's conventions
    # the approximations are the generated deviations, each with ours, the paper's value and the effect
    found = json.loads((first.parent / "summary.json").read_text())["deviations"]
    keys = {d.get("key") for d in found}
    assert {"train.iterations", "crop.hr_size"} <= keys
    assert any(d["kind"] == "network" and d["what"].startswith("squeeze") for d in found)
    assert any(d["what"].endswith("test images") and d["ours"] == 10 and d["paper"] == 1000 for d in found)
    for item in found:
        assert html_escape(deviations.describe(item)) in html
    for package in ("torch", "torchvision", "lpips", "dvc", "snakemake", "numpy", "pandas", "scikit-image"):
        assert f"{package} " in html
    assert "train:" in html and "iterations:" in html      # params as YAML
    # the training precision the models' config.json record, on the card and per model
    assert re.search(r"<th>training precision</th><td>bf16 \(bf16: bfloat16 autocast", html)
    assert re.search(r"<td>cpu</td><td>bf16</td></tr>", html)


def test_version_names(tmp_path, monkeypatch):
    params = default_params()
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    plain = report_version(params, tmp_path)
    assert re.fullmatch(r"nogit-[0-9a-f]{8}", plain)
    changed = copy.deepcopy(params)
    changed["train"]["iterations"] += 1
    assert report_version(changed, tmp_path) != plain
    monkeypatch.setenv("DVC_EXP_NAME", "spiky-lobe")
    assert report_version(params, tmp_path) == "spiky-lobe"
    assert report_version(params, tmp_path, "mine") == "mine"
    with pytest.raises(UserError, match="letters, digits"):
        report_version(params, tmp_path, "../escape")


def test_version_from_git(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    (tmp_path / "code.py").write_text("x = 1\n")
    for cmd in (["init", "-q"], ["add", "code.py"], ["commit", "-q", "-m", "c"]):
        subprocess.run(["git", "-C", str(tmp_path), *cmd], check=True, env=env)
    rev = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short=7", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    params = default_params()
    assert re.fullmatch(rf"{rev}-[0-9a-f]{{8}}", report_version(params, tmp_path))
    (tmp_path / "code.py").write_text("x = 2\n")
    assert re.fullmatch(rf"{rev}-dirty-[0-9a-f]{{8}}", report_version(params, tmp_path))


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"metrics/sample-natural\.json.*evaluate"):
        build_report(default_params(), tmp_path, version="x")


def test_zoom_box_finds_the_detailed_region():
    image = np.full((96, 96, 3), 128, np.uint8)
    image[50:74, 40:64] = np.indices((24, 24)).sum(0)[..., None] % 2 * 255   # a checkerboard patch
    y, x, size = zoom_box(image, 4)
    assert size == 24
    overlap = max(0, min(y + size, 74) - max(y, 50)) * max(0, min(x + size, 64) - max(x, 40))
    assert overlap >= 0.9 * 24 * 24
    # at least MIN_ZOOM_WINDOW source pixels (a 48 px crop's x4 window would be 12), never more than the image
    assert zoom_box(image[:48, :48], 4)[2] == MIN_ZOOM_WINDOW == 24
    assert zoom_box(image[:16, :16], 4)[2] == 16
    assert zoom_box(np.zeros((200, 200, 3), np.uint8), 4)[2] == 50


def test_stage_cli(tmp_path):
    params = default_params()
    params["datasets"] = ["sample-texture"]
    make_workspace(tmp_path, params, n_test=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, str(REPO / "stages" / "report.py"), "--params", "params.yaml",
                           "--version", "cli"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reports" / "cli" / "index.html").is_file()
    (tmp_path / paths.metrics_path("sample-texture")).unlink()
    done = subprocess.run([sys.executable, str(REPO / "stages" / "report.py"), "--params", "params.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "evaluate" in done.stderr


# ---------------------------------------------------------------- the page at a glance (layout rules)

def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, env=env, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def smoke_built(built, tmp_path_factory):
    """A run whose trained methods all stay below bicubic, in a git checkout with two commits, rendered
    under the name of the first commit (as a report re-rendered later keeps its name), beside a copy of
    `built`'s version "first" (whose trained methods beat bicubic) and rendered after it."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("smoke")
    params = default_params()
    params["datasets"] = ["sample-texture"]
    make_workspace(root, params, n_test=4, seeds=(0,), below_bicubic=True)
    (root / "code.py").write_text("x = 1\n")
    _git(root, "init", "-q")
    _git(root, "add", "code.py")
    _git(root, "commit", "-q", "-m", "first")
    first = _git(root, "rev-parse", "HEAD")
    (root / "code.py").write_text("x = 2\n")
    _git(root, "commit", "-q", "-am", "second")
    shutil.copytree(built[0] / "reports" / "first", root / "reports" / "first")
    for k in range(4):    # more versions: compare.html's tables get wider than the window
        shutil.copytree(built[0] / "reports" / "first", root / "reports" / f"a-copy-{k}")
    name = f"{first[:7]}-{params_hash(params)}"
    page = build_report(params, root, version=name)
    return root, page, first, _git(root, "rev-parse", "--short=7", "HEAD")


def test_smoke_banner_tops_a_run_whose_trained_methods_stay_below_bicubic(smoke_built, built):
    _, page, _, _ = smoke_built
    html = page.read_text()
    banner = html.index('id="smoke-banner"')
    assert html.index("</header>") < banner < html.index("<main") and landing.SMOKE_BANNER in html[banner:html.index("<main")]
    assert "best trained" in html[banner:html.index("<main")]     # the numbers that make it one
    assert 'id="smoke-banner"' not in built[2].read_text()        # a run whose trained methods beat bicubic: none


def test_index_leads_with_the_result_that_beats_bicubic(smoke_built):
    root, page, _, _ = smoke_built
    index = (root / "reports" / "index.html").read_text()
    # "first" leads although the smoke run is newer: its page body, not the smoke run's, follows the header
    assert "This page shows <strong>first</strong>" in index and page.parent.name in index.split('id="lead-choice"')[1]
    assert landing.page_body(root / "reports" / "first" / "index.html") in index
    assert 'id="smoke-banner"' not in index
    rows = dict(re.findall(r'<tr data-version="([^"]+)"[^>]*>(.*?)</tr>', index, re.S))
    assert landing.SMOKE_BANNER in rows[page.parent.name] and landing.SMOKE_BANNER not in rows["first"]
    assert "shown above" in rows["first"]


def test_version_name_and_run_card_name_the_same_commit(smoke_built):
    root, page, first, head = smoke_built
    html = page.read_text()
    assert page.parent.name.startswith(first[:7])
    assert f"&middot; git {first[:7]}" in html and f"<code>{first}</code>" in html
    assert f"rendered again at <code>{head}</code>" in html and head != first[:7]
    assert json.loads((page.parent / "summary.json").read_text())["git"]["rev"] == first
    params = default_params()
    params["datasets"] = ["sample-texture"]
    assert report_identity(params, root)[1]["rev"] != first          # no name given: HEAD, named after it
    with pytest.raises(UserError, match="params hash"):
        report_identity(params, root, f"{first[:7]}-00000000")
    with pytest.raises(UserError, match="does not have"):
        report_identity(params, root, f"abcdef0-{params_hash(params)}")


def test_each_na_reason_once_per_page_in_plain_words(built):
    _, _, first, _ = built
    html = first.read_text()
    sentence = str(html_escape(tables.na_explanation("squeeze", SQUEEZE_REASON)))
    assert sentence.startswith("SqueezeNet 1.1: no offline copy of its ImageNet weights, and no network")
    assert html.count(sentence) == 1
    assert html.count("no offline copy") == 1
    # the technical reason only in the run card's weight sources
    before_card = html[:html.index('id="run-card"')]
    assert "Errno" not in before_card and "tried cache" not in before_card
    assert "[Errno -2]" in html[html.index('id="run-card"'):]


def _png(uri: str) -> np.ndarray:
    data = np.frombuffer(__import__("base64").b64decode(uri.split(",", 1)[1]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _panels(html: str) -> list[tuple[str, str, dict]]:
    """(dataset, image id, {panel key: panel HTML}) of every qualitative figure row."""
    out = []
    for ds, image, body in re.findall(r'<div class="qualitative" data-dataset="([^"]+)" data-image="([^"]+)">(.*?)'
                                      r'</div>\s*</div>', html, re.S):
        out.append((ds, image, dict(re.findall(r'<figure class="panel[^"]*" data-panel="([^"]+)">(.*?)</figure>',
                                               body, re.S))))
    return out


def _img(panel: str, kind: str) -> tuple[np.ndarray, int, int]:
    src, width, height = re.search(rf'<img class="px {kind}" src="([^"]+)" width="(\d+)" height="(\d+)"', panel).groups()
    return _png(src), int(width), int(height)


def test_figures_enlarge_by_nearest_neighbour_with_wide_zoom_windows(built):
    root, params, first, _ = built
    html = first.read_text()
    assert re.search(r"img\.px \{[^}]*image-rendering: pixelated", html)   # the browser enlarges without smoothing
    rows = _panels(html)
    assert {ds for ds, _, _ in rows} == set(params["datasets"])
    for ds, image, panels in rows:
        metrics = json.loads((root / paths.metrics_path(ds)).read_text())
        assert list(panels) == ["lr", *metrics["strategies"], "hr"]
        assert "bicubic" in panels
        hr = cv2.cvtColor(cv2.imread(str(root / paths.crops_dir(ds) / "test" / "hr" / f"{image}.png")), cv2.COLOR_BGR2RGB)
        lr = cv2.cvtColor(cv2.imread(str(root / paths.crops_dir(ds) / "test" / "lr" / f"{image}.png")), cv2.COLOR_BGR2RGB)
        for key, panel in panels.items():
            full, width, height = _img(panel, "full")
            zoom, zoom_width, _ = _img(panel, "zoom")
            factor = width // full.shape[1]
            assert width == factor * full.shape[1] and height == factor * full.shape[0] and factor >= MIN_ENLARGE
            assert zoom.shape[0] == zoom.shape[1] >= min(MIN_ZOOM_WINDOW, HR)
            assert zoom_width % zoom.shape[1] == 0 and zoom_width // zoom.shape[1] >= MIN_ENLARGE
            left, top, size = map(int, re.search(r'left:(\d+)px;top:(\d+)px;width:(\d+)px', panel).groups())
            y, x, side = top // factor, left // factor, size // factor
            assert side == zoom.shape[0] and np.array_equal(zoom, full[y:y + side, x:x + side])
            if key == "hr":
                assert np.array_equal(full, hr)
            if key == "lr":      # the LR input itself, each pixel a scale x scale block
                assert np.array_equal(full[::SCALE, ::SCALE], lr) and full.shape == hr.shape


def test_compare_puts_key_parameters_first_and_folds_the_rest(built):
    root, _, _, _ = built
    compare = (root / "reports" / "compare.html").read_text()
    key_table = compare[compare.index('id="key-params"'):compare.index("</table>", compare.index('id="key-params"'))]
    assert re.findall(r'data-param="([^"]+)"', key_table) == ["datasets", "strategy", "train.iterations",
                                                               "crop.hr_size", "train.seeds"]
    folded = compare[compare.index('<details class="params"'):compare.index("</details>")]
    assert 'data-param="data.sample-natural.description"' in folded and "train.iterations" not in folded
    assert "data.sample-natural.description" not in key_table


def test_compare_badges_say_rule_winner_and_column_best(built):
    root, _, _, _ = built
    compare = (root / "reports" / "compare.html").read_text()
    versions = {v["folder"]: v for v in list_versions(root / "reports")}
    apart = 0
    for ds, section in re.findall(r'<section class="dataset" id="compare-([^"]+)">(.*?)</section>', compare, re.S):
        for metric, table in re.findall(r'<table class="metrics compare" data-metric="([^"]+)">(.*?)</table>', section, re.S):
            folders = re.findall(r'<th><a href="([^"/]+)/index.html">', table)
            for name, cells in re.findall(r'<tr data-strategy="([^"]+)">.*?</th>(.*?)</tr>', table, re.S):
                for folder, cell in zip(folders, re.findall(r"<td[^>]*>.*?</td>", cells, re.S)):
                    is_winner = versions[folder]["datasets"][ds]["winner"] == name
                    assert ("selection-rule winner</span>" in cell) == is_winner
                    assert ("column best</span>" in cell) == ('class="best"' in cell)
                    apart += is_winner and 'class="best"' not in cell
    assert apart > 0     # the data has a winner that is not a column's best: the two badges stay apart
    assert ">winner</span>" not in compare


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(built, tmp_path):
    root, params, first, _ = built
    url = (root / "reports" / "index.html").as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for number in (2, 3, 4, 5):
        assert re.search(rf"<h2>Table {number}:", html), f"Table {number} heading missing from the rendered DOM"
    cells = metric_cells(html, 5)
    for ds in params["datasets"]:
        for name in strategies.NAMES:
            assert (ds, name) in cells, f"Table 5 lacks {name} on {ds}"
    for name in tables.GCN_VARIANTS:
        assert all((ds, name) in metric_cells(html, 2) for ds in params["datasets"])
    assert {ds for ds, _ in metric_cells(html, 3)} == {"sample-aerial"}
    assert {ds for ds, _ in metric_cells(html, 4)} == {"sample-natural", "sample-texture"}
    panels = re.findall(r'<img class="px (?:full|zoom)" src="data:image/png;base64,', html)
    n_panels = len(strategies.NAMES) + 2     # LR input, each method, HR
    assert len(panels) == 2 * n_panels * 2 * len(params["datasets"])   # 2 images per dataset, each panel and its zoom
    assert 'id="run-card"' in html

    shot = tmp_path / "report.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1400,3000", "--hide-scrollbars", url],
                     tmp_path / "profile-shot")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    screenshot = cv2.imread(str(shot))
    assert screenshot.shape[:2] == (3000, 1400)
    assert screenshot.std() > 10    # a rendered page, not a blank one
    keep = os.environ.get("REPORT_SCREENSHOT")   # where a developer wants to look at it
    if keep:
        shutil.copy(shot, keep)


# Marks every element that ends right of the window and is not inside a horizontally scrolling box.
LAYOUT_CHECK = """<script>(function () {
  const width = document.documentElement.clientWidth, out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (!box.width || box.right <= width + 1) continue;
    let up = el.parentElement, inside = false;
    while (up && up !== document.body) {
      if (['auto', 'scroll'].includes(getComputedStyle(up).overflowX) && up.getBoundingClientRect().right <= width + 1) {
        inside = true; break;
      }
      up = up.parentElement;
    }
    if (!inside) out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : ''));
  }
  const pre = document.createElement('pre');
  pre.id = 'layout-check';
  pre.textContent = JSON.stringify({width: width, page: document.documentElement.scrollWidth, off: out});
  document.body.appendChild(pre);
})();</script>"""


def off_screen(page: Path, width: int, work: Path) -> dict:
    """The page laid out by headless Chromium in a window `width` px wide: {width, page, off}, `off` the
    elements that end right of the window outside any horizontally scrolling box."""
    probe = page.parent / f".layout-{page.name}"    # beside the page: the same relative links
    probe.write_text(page.read_text().replace("</body>", LAYOUT_CHECK + "</body>"))
    try:
        done = _chromium([f"--window-size={width},900", "--dump-dom", probe.as_uri()], work / f"profile-{width}")
    finally:
        probe.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, re.S)
    assert found, "the layout check did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_nothing_off_screen_at_1366_px_tables_scroll_in_their_box(built, smoke_built, tmp_path):
    root, _, first, _ = built
    pages = [first, root / "reports" / "index.html", root / "reports" / "compare.html",
             smoke_built[1], smoke_built[0] / "reports" / "index.html", smoke_built[0] / "reports" / "compare.html"]
    for page in pages:
        for width in (1366, 900):    # 900: the metric tables are wider than the window and scroll inside their box
            found = off_screen(page, width, tmp_path)
            assert found["off"] == [] and found["page"] <= found["width"], (page, width, found)
