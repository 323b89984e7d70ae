"""The standard SR protocol: models trained on one dataset, scored on whole images of a test-only set, in the report.

The test-only set is `set5` declared as a folder of three scikit-image photographs (sizes that
are not multiples of the scale, one a one-channel greyscale file), so nothing is downloaded and the
report shows the published Set5 numbers (pipeline/resources/sr_benchmark_results.csv) beside ours.
The profile makes its LR images with MATLAB's bicubic, as configs/srgan.yaml; MATLAB's own
imresize is tests/matlab_imresize.py (its algorithm, checked against MATLAB-made files).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import matlab_imresize
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import load_params, validate
from pipeline.data.crop import crop_dataset
from pipeline.data.sources import fetch_dataset
from pipeline.evaluation import metrics
from pipeline.evaluation.benchmark import evaluate_benchmarks
from pipeline.evaluation.evaluate import evaluate_dataset
from pipeline.evaluation.protocol import score_sets
from pipeline.nets import weights
from pipeline.reporting.published import load_published, other_conventions, published_rows
from pipeline.reporting.report import build_report
from pipeline.training.train import train_dataset

REPO = Path(__file__).resolve().parents[1]
DATASET, SET = "sample-texture", "set5"
SCALE = 4
# (file, scikit-image photo, rows, columns): no side a multiple of 4, and one greyscale image
IMAGES = (("butterfly.png", "chelsea", 101, 150), ("head.png", "camera", 90, 123), ("bird.png", "coffee", 130, 97))
GREY = "head.png"
ENV = dict(os.environ, PYTHONPATH=str(REPO))     # the stage runs this checkout's pipeline, not an installed one


def _params() -> dict:
    """The smoke profile on sample-texture (tiny networks, 2 iterations), set5 made of local images."""
    params = copy.deepcopy(load_params(REPO / "params.yaml"))
    params["datasets"] = [DATASET]
    params["strategy"] = ["bicubic", "mse"]
    params["crop"]["hr_size"] = 32
    params["crop"]["downscale"] = "matlab"          # the SR literature's LR images, as configs/srgan.yaml
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
                         cwd=root, capture_output=True, text=True, timeout=600, env=ENV)
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


def _hr(root: Path, name: str, rows: int, cols: int) -> np.ndarray:
    """A set5 file as the protocol scores it: RGB, cropped at the bottom and right to a multiple of 4."""
    image = cv2.imread(str(root / "local-set5" / name), cv2.IMREAD_COLOR)[:rows - rows % SCALE, :cols - cols % SCALE]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _assert_row_scores(row: pd.Series, sr: np.ndarray, hr: np.ndarray, grey: bool) -> None:
    assert row["psnr_y"] == pytest.approx(metrics.psnr_y(sr, hr, SCALE, grey), abs=1e-9)
    assert row["ssim_y"] == pytest.approx(metrics.ssim_y(sr, hr, SCALE, grey), abs=1e-9)
    assert row["l2"] == pytest.approx(metrics.l2(sr, hr), abs=1e-12)


def test_bicubic_row_is_matlab_imresize_down_then_up(project):
    """The stage's bicubic row is MATLAB's imresize(imresize(hr, 1/4), 4) of the modcropped image: its scores equal
    those of the oracle's image (so the images agree pixel for pixel), PSNR-Y and SSIM-Y with 4 pixels shaved."""
    root, params = project
    assert params["crop"]["downscale"] == "matlab"
    table = pd.read_csv(root / "results" / f"{DATASET}-benchmarks.csv", dtype={"id": str})
    for name, _, rows, cols in IMAGES:
        hr = _hr(root, name, rows, cols)
        sr = matlab_imresize.imresize(matlab_imresize.imresize(hr, 1 / SCALE), SCALE)
        row = table[(table["strategy"] == "bicubic") & (table["id"] == Path(name).stem)].iloc[0]
        _assert_row_scores(row, sr, hr, grey=name == GREY)
        assert row["psnr_y"] != pytest.approx(metrics.psnr_y(sr, hr, 0), abs=1e-3)   # the shave matters here


def test_greyscale_image_is_scored_on_its_grey_values(project):
    """head.png is a one-channel file: its PSNR-Y is the PSNR of the grey values (MATLAB's scripts), not that of the
    Y channel of an RGB copy, which squeezes them into [16, 235] and adds 20 log10(255/219) = 1.32 dB."""
    root, _ = project
    record = json.loads((root / "metrics" / f"{DATASET}-benchmarks.json").read_text())
    assert record["benchmarks"][SET]["grey_images"] == [Path(GREY).stem]
    table = pd.read_csv(root / "results" / f"{DATASET}-benchmarks.csv", dtype={"id": str})
    row = table[(table["strategy"] == "bicubic") & (table["id"] == Path(GREY).stem)].iloc[0]
    _, _, rows, cols = next(entry for entry in IMAGES if entry[0] == GREY)
    grey = _hr(root, GREY, rows, cols)[..., 0].astype(np.float64)
    sr = matlab_imresize.imresize(matlab_imresize.imresize(grey.astype(np.uint8), 1 / SCALE), SCALE).astype(np.float64)
    shaved = (slice(SCALE, -SCALE), slice(SCALE, -SCALE))
    assert row["psnr_y"] == pytest.approx(10 * math.log10(255 ** 2 / np.mean((sr[shaved] - grey[shaved]) ** 2)), abs=1e-9)
    rgb = np.repeat(sr[..., None], 3, axis=2).astype(np.uint8), np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    assert row["psnr_y"] == pytest.approx(metrics.psnr_y(*rgb, SCALE) - 20 * math.log10(255 / 219), abs=1e-9)


def test_bicubic_of_the_protocol_is_matlabs_under_an_opencv_profile(project):
    """Under a profile whose LR images are OpenCV's (the default), the protocol's bicubic still upscales with
    MATLAB's imresize: the row beside the published bicubic rows is the literature's upscaler."""
    root, params = project
    opencv = copy.deepcopy(params)
    opencv["crop"]["downscale"], opencv["strategy"], opencv["eval"]["networks"] = "bicubic", ["bicubic"], []
    table, record = score_sets(opencv, DATASET, [SET], root)
    assert record["bicubic_kernel"] == "matlab" and "MATLAB imresize" in record["protocol"]
    for name, _, rows, cols in IMAGES:
        hr = _hr(root, name, rows, cols)
        lr = cv2.resize(hr, (hr.shape[1] // SCALE, hr.shape[0] // SCALE), interpolation=cv2.INTER_CUBIC)
        row = table[table["id"] == Path(name).stem].iloc[0]
        _assert_row_scores(row, matlab_imresize.imresize(lr, SCALE), hr, grey=name == GREY)


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
    # SRGAN's SSIM is not the Y-channel SSIM: marked in its Table 1 row too; its PSNR and the Y-channel reference are not
    assert "ESRGAN (Wang et al. 2018), supplementary Table 2: Bicubic" in section and "28.42" in section
    srgan_mse = section.split("SRGAN (Ledig et al. 2017), Table 1: SRResNet-MSE")[1].split("</tr>")[0]
    assert srgan_mse.count('class="other-convention"') == 1 and "0.9019<sup>&dagger;</sup>" in srgan_mse
    assert "another SSIM-Y convention: this paper&#39;s bicubic scores 0.8211 on Set5, the Y-channel tables 0.8104" in section
    esrgan = section.split("ESRGAN (Wang et al. 2018), supplementary Table 2: Bicubic")[1].split("</tr>")[0]
    assert "other-convention" not in esrgan


def test_a_published_column_is_another_convention_when_its_bicubic_row_departs_from_the_y_channel_tables():
    published = load_published()
    marks = other_conventions(published)
    assert set(marks[("set5", "SRGAN (Ledig et al. 2017)")]) == {"ssim_y"}            # PSNR 28.43 vs 28.42: alike
    assert set(marks[("set5", "Dual Perceptual (DP) loss paper")]) == {"psnr_y", "ssim_y"}
    assert not any(paper.startswith("ESRGAN") for _, paper in marks)
    assert [set(p.conventions) for p in published_rows(published, "set14", "mse")] == [{"ssim_y"}]   # Table 1 too
    agreeing = published.copy()   # a paper whose bicubic SSIM matched the Y-channel tables would not be marked
    srgan_set5 = (agreeing["benchmark"] == "set5") & (agreeing["method"] == "bicubic") & agreeing["source"].str.startswith("SRGAN")
    agreeing.loc[srgan_set5, "ssim_y"] = 0.8110
    assert ("set5", "SRGAN (Ledig et al. 2017)") not in other_conventions(agreeing)


def test_missing_test_only_set_is_one_line_naming_the_folder(project):
    root, params = project
    other = copy.deepcopy(params)
    other["eval"]["benchmarks"] = ["set14"]
    path = root / "other.yaml"
    path.write_text(json.dumps(other))
    run = subprocess.run([sys.executable, str(REPO / "stages" / "benchmark.py"), "--params", str(path),
                          "--dataset", DATASET], cwd=root, capture_output=True, text=True, timeout=300, env=ENV)
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
    from pipeline.evaluation.protocol import modcrop

    image = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    assert np.array_equal(modcrop(image, 4), image[:4, :8])
