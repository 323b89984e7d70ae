"""The standard SR protocol: models trained on one dataset, scored on whole images of a test-only set, in the report.

The test-only set is `set5` declared as a folder of three scikit-image photographs (sizes that
are not multiples of the scale, one greyscale), so nothing is downloaded and the report shows the
published Set5 numbers (pipeline/resources/sr_benchmark_results.csv) beside ours.
"""

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
import torch.nn.functional as F

from pipeline import metrics, weights
from pipeline.benchmark import evaluate_benchmarks
from pipeline.config import load_params, validate
from pipeline.crop import crop_dataset
from pipeline.evaluate import evaluate_dataset
from pipeline.imageset import from_unit, to_unit
from pipeline.report import build_report
from pipeline.sources import fetch_dataset
from pipeline.train import train_dataset

REPO = Path(__file__).resolve().parents[1]
DATASET, SET = "sample-texture", "set5"
SCALE = 4
# (file, scikit-image photo, rows, columns): no side a multiple of 4, and one greyscale image
IMAGES = (("butterfly.png", "chelsea", 101, 150), ("head.png", "camera", 90, 123), ("bird.png", "coffee", 130, 97))


def _params() -> dict:
    """The smoke profile on sample-texture (tiny networks, 2 iterations), set5 made of local images."""
    params = copy.deepcopy(load_params(REPO / "params.yaml"))
    params["datasets"] = [DATASET]
    params["strategy"] = ["bicubic", "mse"]
    params["crop"]["hr_size"] = 32
    params["data"][DATASET]["crop"] = {"n_train": 12, "n_test": 2, "split": "by_region"}
    params["data"][SET]["source"] = {"type": "folder", "path": "local-set5"}
    params["train"].update(iterations=2, rec_pretrain=2, checkpoint_every=2, seeds=1, validate_every=0,
                           device="cpu", generator={"blocks": 1, "width": 8, "upsample": "pixelshuffle"},
                           discriminator={"blocks": 4, "width": 8, "dense": 16, "head": "patch", "plain_blocks": 2,
                                          "decoder_output": "tanh"})
    params["eval"].update(networks=["alex"], weights_order=["cache"], benchmarks=[SET])
    params["report"]["figures_per_dataset"] = 0
    return validate(params)


def _write_images(folder: Path) -> None:
    from skimage import data as skdata

    folder.mkdir(parents=True)
    for name, photo, rows, cols in IMAGES:
        image = getattr(skdata, photo)()[:rows, :cols]
        cv2.imwrite(str(folder / name), image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def project(tmp_path_factory, weights_root) -> tuple[Path, dict]:
    """Train on sample-texture, evaluate it, download (index) the local set5 and score the models on it."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("benchmark")
    weights.resolve("alexnet", ["cache", "registry"], weights_root)   # LPIPS Alex: shared with the other tests
    (root / "weights").symlink_to(weights_root / "weights", target_is_directory=True)
    _write_images(root / "local-set5")
    params = _params()
    (root / "params.yaml").write_text(json.dumps(params))   # JSON is YAML: the stage CLIs read it
    for name in (DATASET, SET):
        fetch_dataset(params, name, root)
    crop_dataset(params, DATASET, root)
    train_dataset(params, DATASET, root=root)
    evaluate_dataset(params, DATASET, root)
    run = subprocess.run([sys.executable, str(REPO / "stages" / "benchmark.py"), "--dataset", DATASET],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return root, params


def test_every_model_is_scored_on_every_whole_image(project):
    root, _ = project
    record = json.loads((root / "metrics" / f"{DATASET}-benchmarks.json").read_text())
    scored = record["benchmarks"][SET]
    assert scored["n_images"] == len(IMAGES) and set(scored["strategies"]) == {"bicubic", "mse"}
    for name, values in scored["strategies"].items():
        for column in ("psnr_y", "ssim_y", "l2", "ssim_error", "pe_alex", "pe_alex_lin"):
            assert math.isfinite(values[column]), (name, column)
            low, high = scored["stats"][name][column]["ci_low"], scored["stats"][name][column]["ci_high"]
            assert low <= values[column] <= high
        assert values["pe_vgg_lin"] is None                # not requested: n/a, never a number
    assert record["networks"]["alex"]["available"]
    table = pd.read_csv(root / "results" / f"{DATASET}-benchmarks.csv", dtype={"id": str})
    assert len(table) == len(IMAGES) * 2 and set(table["benchmark"]) == {SET}
    assert sorted(table[table["strategy"] == "mse"]["id"]) == sorted(Path(n).stem for n, *_ in IMAGES)


def test_bicubic_row_is_the_standard_protocol(project):
    """Recomputed here: HR cropped to a multiple of 4 (not resized), LR by crop.downscale (OpenCV bicubic)
    from it, and PSNR-Y / SSIM-Y with 4 pixels shaved; the stage's values must be these."""
    root, params = project
    assert params["crop"]["downscale"] == "bicubic"
    table = pd.read_csv(root / "results" / f"{DATASET}-benchmarks.csv", dtype={"id": str})
    for name, _, rows, cols in IMAGES:
        image = cv2.imread(str(root / "local-set5" / name), cv2.IMREAD_COLOR)[:rows - rows % SCALE, :cols - cols % SCALE]
        hr = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        lr = cv2.resize(hr, (hr.shape[1] // SCALE, hr.shape[0] // SCALE), interpolation=cv2.INTER_CUBIC)
        lr_unit = to_unit(torch.from_numpy(lr).permute(2, 0, 1)[None])
        sr = from_unit(F.interpolate(lr_unit, scale_factor=SCALE, mode="bicubic", align_corners=False))
        sr = sr[0].permute(1, 2, 0).numpy()
        row = table[(table["strategy"] == "bicubic") & (table["id"] == Path(name).stem)].iloc[0]
        assert row["psnr_y"] == pytest.approx(metrics.psnr_y(sr, hr, SCALE), abs=1e-9)
        assert row["ssim_y"] == pytest.approx(metrics.ssim_y(sr, hr, SCALE), abs=1e-9)
        assert row["psnr_y"] != pytest.approx(metrics.psnr_y(sr, hr, 0), abs=1e-3)   # the shave matters here
        assert row["l2"] == pytest.approx(metrics.l2(sr, hr), abs=1e-12)


def test_report_shows_ours_beside_the_published_numbers(project):
    root, params = project
    page = build_report(params, root, version="bench").read_text()
    section = page.split('<section id="benchmarks">')[1].split("</section>")[0]
    assert f"trained on {DATASET}, scored on Set5" in section and "3 whole images" in section
    assert 'data-strategy="mse"' in section and 'data-strategy="bicubic"' in section
    # SRGAN Table 1 for SRResNet-MSE (= mse), Table 2 and the DP paper's Table 6 for bicubic
    assert "SRGAN (Ledig et al. 2017), Table 1: SRResNet-MSE" in section and "32.05" in section and "0.9019" in section
    assert "SRGAN (Ledig et al. 2017), Table 2: bicubic" in section and "28.43" in section
    assert "Dual Perceptual (DP) loss paper, Table 6: Bicubic" in section and "0.3644" in section
    assert "SRGAN-VGG54" not in section           # srgan was not evaluated: its published row is not shown
    record = json.loads((root / "metrics" / f"{DATASET}-benchmarks.json").read_text())
    ours = record["benchmarks"][SET]["strategies"]["mse"]["psnr_y"]
    assert f"({ours - 32.05:+.2f})" in section     # ours - published


def test_missing_test_only_set_is_one_line_naming_the_folder(project):
    root, params = project
    other = copy.deepcopy(params)
    other["eval"]["benchmarks"] = ["set14"]
    path = root / "other.yaml"
    path.write_text(json.dumps(other))
    run = subprocess.run([sys.executable, str(REPO / "stages" / "benchmark.py"), "--params", str(path),
                          "--dataset", DATASET], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    line = run.stderr.strip()
    assert "\n" not in line and "download_benchmark@set14" in line
    assert str((root / "data" / "user" / "set14").resolve()) in line


def test_no_benchmark_selected_writes_an_empty_record_without_models(tmp_path):
    params = _params()
    params["eval"]["benchmarks"] = []
    result = evaluate_benchmarks(params, DATASET, tmp_path)      # no models, no data: nothing is read
    assert result["benchmarks"] == {}
    assert json.loads((tmp_path / "metrics" / f"{DATASET}-benchmarks.json").read_text())["benchmarks"] == {}
    assert (tmp_path / "results" / f"{DATASET}-benchmarks.csv").read_text().startswith("benchmark,id,strategy,seed")


def test_modcrop_keeps_the_top_left_multiple_of_the_scale():
    from pipeline.protocol import modcrop

    image = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    assert np.array_equal(modcrop(image, 4), image[:4, :8])
