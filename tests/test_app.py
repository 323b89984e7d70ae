"""`gcn-bench` (pipeline.app): upscale any image with a trained model, score SR against HR, list models."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import app, metrics
from pipeline.models import Bicubic, Generator, save_generator
from pipeline.upscale import read_image, receptive_radius, super_resolve

REPO = Path(__file__).resolve().parents[1]
ARCH = {"blocks": 2, "width": 16, "scale": 4}


def _gcn_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script, run as `python -m pipeline.app` (the entry point needs a reinstall)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pipeline.app", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def _error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def _smooth(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    """A smooth random uint8 image (noise upsampled), so bicubic SR is close to it."""
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), channels), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """models/toy/{mse (random generator), bicubic (untrained)} and inputs/ with four image kinds."""
    torch.manual_seed(0)
    mse = tmp_path / "models" / "toy" / "mse" / "seed-0"
    mse.mkdir(parents=True)
    save_generator(Generator(**ARCH), ARCH, mse / "generator.pt")
    (mse / "config.json").write_text(json.dumps({"strategy": "mse", "slug": "mse", "scale": 4, "iterations": 2,
                                                 "device": "cpu", "completed": True}))
    bicubic = tmp_path / "models" / "toy" / "bicubic" / "seed-0"
    bicubic.mkdir(parents=True)
    (bicubic / "config.json").write_text(json.dumps({"strategy": "bicubic", "slug": "bicubic", "scale": 4,
                                                     "untrained": True, "completed": True}))
    rng = np.random.default_rng(0)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "colour.png"), _smooth(rng, 24, 40))
    cv2.imwrite(str(inputs / "photo.jpg"), _smooth(rng, 30, 17))
    cv2.imwrite(str(inputs / "grey.png"), _smooth(rng, 20, 20, 1)[:, :, 0])
    rgba = np.concatenate([_smooth(rng, 16, 24), np.full((16, 24, 1), 80, np.uint8)], axis=2)
    cv2.imwrite(str(inputs / "alpha.png"), rgba)
    cv2.imwrite(str(inputs / "deep.png"), _smooth(rng, 12, 12).astype(np.uint16) * 257)
    return tmp_path


def test_upscale_folder_writes_x4_rgb_for_every_image_kind(project):
    run = _gcn_bench("upscale", "models/toy/bicubic", "inputs", cwd=project)
    assert run.returncode == 0, run.stderr
    inputs = project / "inputs"
    for name in ("colour.png", "photo.jpg", "grey.png", "alpha.png", "deep.png"):
        source = cv2.imread(str(inputs / name), cv2.IMREAD_UNCHANGED)
        out = cv2.imread(str(inputs / f"{Path(name).stem}_x4_bicubic.png"), cv2.IMREAD_UNCHANGED)
        assert out.shape == (source.shape[0] * 4, source.shape[1] * 4, 3), name
    grey = cv2.imread(str(inputs / "grey_x4_bicubic.png"))
    assert np.array_equal(grey[:, :, 0], grey[:, :, 1]) and np.array_equal(grey[:, :, 1], grey[:, :, 2])
    # RGBA: the colour channels are upscaled as they are (alpha dropped, not composited)
    alpha_in = cv2.imread(str(inputs / "alpha.png"), cv2.IMREAD_UNCHANGED)[:, :, :3]
    expected = super_resolve(Bicubic(4), cv2.cvtColor(alpha_in, cv2.COLOR_BGR2RGB), 4, tile=0)
    assert np.array_equal(cv2.imread(str(inputs / "alpha_x4_bicubic.png")), cv2.cvtColor(expected, cv2.COLOR_RGB2BGR))
    # 16 bit: 65535 is white, as 255 in 8 bit
    assert read_image(inputs / "deep.png").max() == cv2.imread(str(inputs / "deep.png"), cv2.IMREAD_UNCHANGED).max() // 257

    # a second run on the same folder does not upscale its own outputs; --out and <dataset>/<strategy>
    run = _gcn_bench("upscale", "toy/mse", "inputs", "--out", "sr", "--tile", "8", "--device", "cpu", cwd=project)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (project / "sr").iterdir()) == [
        "alpha_x4_mse.png", "colour_x4_mse.png", "deep_x4_mse.png", "grey_x4_mse.png", "photo_x4_mse.png"]


def test_tiled_upscale_equals_untiled():
    torch.manual_seed(1)
    for upsample in ("pixelshuffle", "nearest"):
        model = Generator(blocks=2, width=16, upsample=upsample, scale=4).eval()
        with torch.no_grad():   # non-trivial BatchNorm statistics, as after training
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 2.0)
        image = np.random.default_rng(2).integers(0, 256, (45, 70, 3), dtype=np.uint8)
        whole = super_resolve(model, image, 4, tile=0).astype(int)
        tiled = super_resolve(model, image, 4, tile=16).astype(int)
        # equal up to float summation order: at most one 8-bit level, on a few pixels
        assert np.abs(tiled - whole).max() <= 1 and np.mean(tiled != whole) < 1e-3
        # without context the tile seams differ: the overlap is what makes tiling exact
        seams = super_resolve(model, image, 4, tile=16, overlap=0).astype(int)
        assert np.abs(seams - whole).max() > 8


def test_receptive_radius_bounds_the_influence_of_one_pixel():
    torch.manual_seed(3)
    model = Generator(**ARCH).eval()
    radius = receptive_radius(model)
    assert radius == 12  # 9x9 head (4) + 2 blocks x 2 convs (4) + post (1) + x2 conv (1) + x2 conv (1/2) + 9x9 tail at x4 (1)
    image = np.random.default_rng(4).integers(0, 256, (1, 3, 41, 41), dtype=np.uint8)
    lr = torch.from_numpy(image).float() / 127.5 - 1
    bumped = lr.clone()
    bumped[0, :, 20, 20] += 1.0
    with torch.no_grad():
        diff = (model(bumped) - model(lr)).abs().amax(dim=(0, 1))
    rows, cols = torch.nonzero(diff > 0, as_tuple=True)
    reach = max((rows - 20 * 4 - 1.5).abs().max(), (cols - 20 * 4 - 1.5).abs().max()) / 4
    assert radius - 1 < reach <= radius


def test_score_writes_per_image_csv_and_summary(project, tmp_path):
    rng = np.random.default_rng(5)
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    hr.mkdir(), lr.mkdir()
    for name, (h, w) in {"one": (64, 48), "two": (40, 80), "three": (42, 42)}.items():
        image = _smooth(rng, h, w)
        cv2.imwrite(str(hr / f"{name}.png"), image)
        cv2.imwrite(str(lr / f"{name}.png"), cv2.resize(image, (w // 4, h // 4), interpolation=cv2.INTER_AREA))
    assert _gcn_bench("upscale", "toy/bicubic", "lr", "--out", "sr", cwd=project).returncode == 0
    run = _gcn_bench("score", str(project / "sr"), str(hr), "--csv", "scores.csv", "--networks", "alex",
                     "--weights-order", "cache", "--root", str(tmp_path / "no-weights"), cwd=project)
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(project / "scores.csv")
    low_level = list(metrics.image_metrics(np.zeros((32, 32, 3)), np.ones((32, 32, 3)), 4))
    assert list(table.columns) == ["image", "reference", *low_level, "pe_alex", "pe_alex_lin"]
    assert sorted(table["reference"]) == ["one.png", "three.png", "two.png"]
    row = table.set_index("reference").loc["three.png"]   # 42 px: cropped to the SR's 40 px (modcrop)
    sr, ref = read_image(project / "sr" / "three_x4_bicubic.png"), read_image(hr / "three.png")[:40, :40]
    for key, value in metrics.image_metrics(sr, ref, 4).items():
        assert row[key] == pytest.approx(value)
    assert table["pe_alex"].isna().all()          # no weights: n/a, said in the summary with the reason
    assert "pe_alex, pe_alex_lin: n/a (no ImageNet weights for alexnet" in run.stdout
    for key in low_level:
        mean = metrics.aggregate(list(table[key]), key)[0]
        line = next(l for l in run.stdout.splitlines() if l.split()[:1] == [key])
        assert float(line.split()[1]) == pytest.approx(mean, abs=1e-4)
    assert "3 images scored" in run.stdout and "1 references cropped" in run.stdout

    # a folder scored against itself: zero error, PSNR inf per image (capped in the mean)
    same = _gcn_bench("score", str(hr), str(hr), "--networks", "", "--csv", "same.csv", cwd=project)
    assert same.returncode == 0, same.stderr
    table = pd.read_csv(project / "same.csv")
    assert (table["l2"] == 0).all() and np.isinf(table["psnr"]).all() and (table["ssim_error"] == 0).all()
    assert float(next(l for l in same.stdout.splitlines() if l.startswith("psnr ")).split()[1]) == metrics.PSNR_CAP


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(project, capsys):
    inputs = project / "inputs"
    before = sorted(p.name for p in inputs.iterdir())
    (inputs / "broken.png").write_text("not an image")
    run = _gcn_bench("upscale", "toy/mse", "inputs", "--out", "out", cwd=project)
    assert run.returncode == 2 and "broken.png: cannot read" in _error_line(run.stderr)
    assert not (project / "out").exists()

    def gcn_bench(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            app.main([*args, "--root", str(project)] if args[0] != "score" else list(args))
        assert exit_info.value.code == 2
        return _error_line(capsys.readouterr().err)

    assert "missing.png: no such file" in gcn_bench("upscale", "toy/mse", str(project / "missing.png"))
    assert "toy/srgan: unknown model" in gcn_bench("upscale", "toy/srgan", str(inputs / "colour.png"))
    assert "unknown model" in gcn_bench("config", str(project / "inputs"))
    (project / "models" / "toy" / "mse" / "seed-0" / "generator.pt").write_bytes(b"truncated")
    assert "cannot load the model" in gcn_bench("upscale", "toy/mse", str(inputs / "colour.png"))
    if not torch.cuda.is_available():
        assert "--device: cuda" in gcn_bench("upscale", "toy/bicubic", str(inputs / "colour.png"), "--device", "cuda")
    (inputs / "broken.png").unlink()
    assert sorted(p.name for p in inputs.iterdir()) == before

    # score: sizes that differ by more than the scale; an unknown network; a missing folder
    sr, hr = project / "sr", project / "hr"
    sr.mkdir(), hr.mkdir()
    cv2.imwrite(str(sr / "a.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(hr / "a.png"), np.zeros((48, 32, 3), np.uint8))
    csv = project / "scores.csv"
    assert "a.png: SR image is 32x32 but its reference is 32x48" in gcn_bench(
        "score", str(sr), str(hr), "--networks", "", "--csv", str(csv))
    assert not csv.exists()
    assert "--networks: unknown network 'resnet'" in gcn_bench("score", str(sr), str(hr), "--networks", "resnet")
    assert "nowhere: no such folder" in gcn_bench("score", str(project / "nowhere"), str(hr))
    assert "no image has a reference" in gcn_bench("score", str(sr), str(inputs))


def test_models_lists_trained_models_and_config_prints_one(project, capsys):
    (project / "models" / "toy" / "adv" / "seed-0").mkdir(parents=True)   # training started, not finished
    app.main(["models", "--root", str(project)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["dataset", "strategy", "seed", "iterations", "device", "completed"]
    assert [l.split() for l in lines[1:]] == [["toy", "adv", "0", "?", "-", "no"],
                                             ["toy", "bicubic", "0", "-", "-", "yes"],
                                             ["toy", "mse", "0", "2", "cpu", "yes"]]
    app.main(["config", "toy/mse", "--root", str(project)])
    config = json.loads((project / "models/toy/mse/seed-0/config.json").read_text())
    assert json.loads(capsys.readouterr().out) == config
    app.main(["config", "toy/mse", "--seed", "0", "--root", str(project)])
    assert json.loads(capsys.readouterr().out) == config
    with pytest.raises(SystemExit) as stop:
        app.main(["config", "toy/mse", "--seed", "3", "--root", str(project)])
    assert stop.value.code == 2 and "no model of seed 3; valid seeds: 0" in capsys.readouterr().err


def test_score_perceptual_error_with_weights(project, tmp_path, weights_root):
    from pipeline import perceptual, weights
    root = weights_root   # the session's weights root (tests/conftest.py), never a fixed shared folder
    try:
        state, _ = weights.resolve("alexnet", ["cache", "registry"], root)
    except weights.WeightsUnavailable as err:
        pytest.skip(f"no AlexNet ImageNet weights: {err}")
    rng = np.random.default_rng(6)
    hr, sr = tmp_path / "hr", tmp_path / "sr"
    hr.mkdir(), sr.mkdir()
    for name in ("a", "b"):
        image = _smooth(rng, 64, 64)
        cv2.imwrite(str(hr / f"{name}.png"), image)
        cv2.imwrite(str(sr / f"{name}.png"), cv2.GaussianBlur(image, (7, 7), 2))
    args = ("--networks", "alex", "--weights-order", "cache", "--root", str(root), "--device", "cpu")
    assert _gcn_bench("score", str(sr), str(hr), "--csv", "pe.csv", *args, cwd=project).returncode == 0
    assert _gcn_bench("score", str(hr), str(hr), "--csv", "same.csv", *args, cwd=project).returncode == 0
    table, same = pd.read_csv(project / "pe.csv"), pd.read_csv(project / "same.csv")
    assert (same[["pe_alex", "pe_alex_lin"]] == 0).all().all()
    # the calibrated column is lpips' own LPIPS forward on the RGB images in [-1,1]
    model = perceptual.build_lpips("alex", state, calibrated=True)
    for _, row in table.iterrows():
        rgb = [cv2.cvtColor(cv2.imread(str(folder / row["reference"])), cv2.COLOR_BGR2RGB) for folder in (sr, hr)]
        pair = [torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1 for image in rgb]
        with torch.no_grad():
            assert row["pe_alex_lin"] == pytest.approx(float(model(*pair)), rel=1e-4)
        assert row["pe_alex"] > 0


def test_compare_prints_each_method_minus_the_reference_and_refuses_unknown_names(tmp_path, capsys):
    """gcn-bench compare on a per_image.csv laid out as the evaluate stage writes it (bicubic on seed 0 only)."""
    rng = np.random.default_rng(0)
    hardness = rng.normal(20.0, 2.0, 64)
    rows = [{"id": f"test-{i:06d}", "strategy": "bicubic", "seed": 0, "psnr_y": h} for i, h in enumerate(hardness)]
    for seed in (0, 1):
        rows += [{"id": f"test-{i:06d}", "strategy": "mse", "seed": seed, "psnr_y": h + 0.3 + rng.normal(0, 0.05)}
                 for i, h in enumerate(hardness)]
    per_image = tmp_path / "per_image.csv"
    pd.DataFrame(rows).to_csv(per_image, index=False)
    app.main(["compare", str(per_image), "--metrics", "psnr_y"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("mse"))
    parts = line.split()
    mean, low, high = float(parts[1]), float(parts[2].strip("[,")), float(parts[3].strip("],"))
    assert mean == pytest.approx(0.3, abs=0.02) and 0 < low < 0.3 < high and "2 seeds x 64 images" in line

    def refused(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            app.main(["compare", *args])
        assert exit_info.value.code == 2
        return _error_line(capsys.readouterr().err)

    assert "valid choices: bicubic, mse" in refused(str(per_image), "--reference", "srgan")
    assert "valid choices: psnr_y" in refused(str(per_image), "--metrics", "psnr")
    assert "no such file" in refused(str(tmp_path / "nowhere.csv"))
    # mse has two different seeds: one line and exit 2, not a traceback
    assert "deterministic" in refused(str(per_image), "--reference", "mse", "--metrics", "psnr_y")
