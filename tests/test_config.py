"""params.yaml validation: invalid values stop with one line naming the key and the choices (exit code 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import dataset_spec, load_params
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params["datasets"] == ["sample-natural", "sample-texture", "sample-aerial"]


def set_key(params: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value
    return params


CASES = [
    # (key to set, value, fragments the message must contain)
    ("datasets", ["sample-natural", "imagenett"], ["datasets", "'imagenett'", "sample-natural", "dtd"]),
    ("crop.hr_size", -64, ["crop.hr_size", "-64", "positive integer"]),
    ("crop.scale", 7, ["crop.scale", "7", "does not divide crop.hr_size"]),
    ("crop.hr_sise", 64, ["crop.hr_sise", "unknown key", "hr_size", "downscale"]),
    ("crop.downscale", "lanczos", ["crop.downscale", "bicubic", "bilinear", "bicubic_antialias", "area", "matlab"]),
    ("crop.lr_from", "original", ["crop.lr_from", "'original'", "hr", "source"]),
    ("data.sample-natural.crop.prep", "warp", ["data.sample-natural.crop.prep", "'warp'", "crop", "resize"]),
    ("data.sample-texture.crop.prep", "resize", ["data.sample-texture.crop.split", "by_region", "prep: crop", "by_image"]),
    ("strategy", "dis+recc", ["strategy", "dis+recc", "dis,rec", "all"]),
    ("data.sample-texture.crop.split", "by_pixel", ["data.sample-texture.crop.split", "by_image", "by_region"]),
    ("data.sample-natural.source.type", "s3", ["data.sample-natural.source.type", "skimage", "pypi", "url", "folder"]),
    ("data.sample-aerial.source.package", "deepforest", ["data.sample-aerial.source.package", "NAME==VERSION"]),
    ("data.dtd.source.url", "ftp://x/y.tar", ["data.dtd.source.url", "https://"]),
    ("train.validate_every", -10, ["train.validate_every", "-10", "integer >= 0"]),
    ("train.validate_images", 0, ["train.validate_images", "positive integer"]),
    ("eval.benchmarks", ["sample-natural"], ["eval.benchmarks", "'sample-natural'", "set5", "set14", "bsd100"]),
    ("eval.benchmarks", "set5", ["eval.benchmarks", "must be a list", "urban100"]),
]


@pytest.mark.parametrize("key,value,fragments", CASES, ids=[c[0] for c in CASES])
def test_invalid_values_name_key_and_choices(tmp_path, key, value, fragments):
    path = write(tmp_path, set_key(base(), key, value))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_paper_profile_prepares_as_the_authors(tmp_path):
    """configs/paper.yaml: whole-image resize for ImageNet/DTD, crops for Sat, bilinear LR from the source."""
    from pipeline.config import apply_overlay

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    params = apply_overlay(path, REPO / "configs" / "paper.yaml")
    assert params["crop"] == {"hr_size": 256, "scale": 4, "downscale": "bilinear", "lr_from": "source", "seed": 0}
    assert [dataset_spec(params, d)["crop"]["prep"] for d in ("imagenet", "dtd", "sat")] == ["resize", "resize", "crop"]
    assert dataset_spec(params, "imagenet")["crop"]["n_train"] == 70000   # the overlay merges, keeps the counts
    assert dataset_spec(load_params(REPO / "params.yaml"), "sample-natural")["crop"]["prep"] == "crop"


def test_unknown_dataset_spec():
    with pytest.raises(ConfigError, match="unknown dataset 'nope'.*sample-aerial"):
        dataset_spec(load_params(REPO / "params.yaml"), "nope")


def run_stage(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stage", ["crop", "download"])
def test_stage_cli_config_error_exits_2_with_one_line(tmp_path, stage):
    path = write(tmp_path, set_key(base(), "crop.scale", 7))
    proc = run_stage(str(REPO / "stages" / f"{stage}.py"), "--params", str(path), "--dataset", "sample-natural",
                     cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "crop.scale" in lines[0] and f"hr_size {base()['crop']['hr_size']}" in lines[0]
    assert not (tmp_path / "data").exists()   # stopped before any work


def test_stage_cli_unknown_dataset_exits_2(tmp_path):
    proc = run_stage(str(REPO / "stages" / "crop.py"), "--params", str(REPO / "params.yaml"), "--dataset", "nope",
                     cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "'nope'" in proc.stderr and "sample-natural" in proc.stderr


def test_download_stage_offline_names_url_and_hand_path(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    params = base()
    params["data"]["set5"]["source"]["url"] = url = f"http://127.0.0.1:{port}/Set5_HR.tar.gz"
    path = write(tmp_path, params)
    proc = run_stage(str(REPO / "stages" / "download.py"), "--params", str(path), "--dataset", "set5", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and url in line
    assert str((tmp_path / "data" / "cache" / "url" / "set5" / "Set5_HR.tar.gz").resolve()) in line
    assert str((tmp_path / "data" / "user" / "set5").resolve()) in line     # or a folder of its images


@pytest.mark.parametrize("profile", ["srgan", "dogs"])
def test_srgan_and_dogs_profiles_apply_with_the_configure_stage(tmp_path, profile):
    """configs/srgan.yaml (SRGAN 3.2 on DIV2K, scored on Set5/Set14/BSD100) and configs/dogs.yaml (seed 003)."""
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    proc = run_stage(str(REPO / "stages" / "configure.py"), "--params", str(path), str(REPO / "configs" / f"{profile}.yaml"),
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    params = load_params(path)
    train = params["train"]
    # SRGAN's generator and discriminator, 96 px crops at x4, batches of 16, Adam(1e-4, beta1 0.9), 1e-3 adversarial
    assert params["crop"]["hr_size"] == 96 and params["crop"]["scale"] == 4
    assert train["generator"] == {"blocks": 16, "width": 64, "upsample": "pixelshuffle"}
    assert train["discriminator"]["head"] == "flatten" and train["discriminator"]["plain_blocks"] == 1
    assert (train["batch_size"], train["lr"], train["beta1"], train["lambda2"]) == (16, 1e-4, 0.9, 1e-3)
    if profile == "srgan":
        assert params["datasets"] == ["div2k"]
        assert params["strategy"] == ["bicubic", "mse", "srresnet-vgg22", "cla", "srgan-vgg22", "srgan"]
        assert params["eval"]["benchmarks"] == ["set5", "set14", "bsd100"]
        assert (train["lr_milestones"], train["lr_gamma"]) == ([100000], 0.1)   # 1e-4, then 1e-5
        assert (train["pretrain_mse"], train["iterations"]) == (10 ** 6, 2 * 10 ** 5)
        assert params["crop"]["downscale"] == "matlab"
    else:
        assert params["datasets"] == ["dogs"] and params["strategy"] == ["bicubic", "mse", "srgan"]
        assert (train["pretrain_mse"], train["iterations"]) == (20000, 5000)
        assert params["crop"]["downscale"] == "bicubic" and params["eval"]["benchmarks"] == []
