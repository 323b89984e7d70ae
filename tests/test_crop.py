"""The crop stage on small real images: determinism, disjoint splits, bad inputs, manifest round trip."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import matlab_imresize
import numpy as np
import pytest
import yaml
from skimage import data as skdata

from pipeline import paths
from pipeline.config import validate
from pipeline.config import DOWNSCALE_METHODS
from pipeline.data.crop import allocate, crop_dataset, downscale, resize, stable_hash
from pipeline.data.imageset import MANIFEST_COLUMNS, load_pairs, read_manifest
from pipeline.data.sources import make_source
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[1]
HR, SCALE = 32, 4


def textured(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth-plus-noise BGR uint8 image, different for every seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / (5 + seed)) + np.cos(yy / 7)) * 60 + 128
    image = base[..., None] + rng.normal(0, 20, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_params(name: str, crop: dict, **dataset) -> dict:
    """The repository's params.yaml with one extra folder dataset `name` (validated)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"][name] = {"source": {"type": "folder", "path": f"images/{name}"}, "crop": crop, **dataset}
    params["crop"] = {"hr_size": HR, "scale": SCALE, "downscale": "bicubic", "seed": 0}
    return validate(params)


def setup_dataset(root: Path, name: str, images: dict[str, np.ndarray | bytes]) -> None:
    """Write the images into root/images/<name> and run the folder source (SOURCE.json)."""
    folder = root / "images" / name
    folder.mkdir(parents=True)
    for file, content in images.items():
        if isinstance(content, bytes):
            (folder / file).write_bytes(content)
        else:
            assert cv2.imwrite(str(folder / file), content)
    make_source({"type": "folder", "path": f"images/{name}"}, root=root).fetch(root / paths.raw_dir(name))


def snapshot(root: Path, name: str) -> dict[str, bytes]:
    out = root / paths.crops_dir(name)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "info.json"}   # info.json holds the run time


def overlap(a: tuple[int, int], b: tuple[int, int], size: int) -> bool:
    return abs(a[0] - b[0]) < size and abs(a[1] - b[1]) < size


FIVE = {f"img{i}.png": textured(i, 80 + 10 * i, 90) for i in range(5)}


def test_crops_are_deterministic(tmp_path):
    params = make_params("toy", {"n_train": 12, "n_test": 4, "split": "by_image"})
    for root in (tmp_path / "a", tmp_path / "b"):
        setup_dataset(root, "toy", FIVE)
        crop_dataset(params, "toy", root)
    first = snapshot(tmp_path / "a", "toy")
    assert len(first) == 1 + 2 * 16   # manifest + HR and LR of each crop
    assert first == snapshot(tmp_path / "b", "toy")
    crop_dataset(params, "toy", tmp_path / "a")   # a rerun over an existing output
    assert snapshot(tmp_path / "a", "toy") == first
    other = copy.deepcopy(params)
    other["crop"]["seed"] = 1
    crop_dataset(other, "toy", tmp_path / "b")
    assert snapshot(tmp_path / "b", "toy")["manifest.csv"] != first["manifest.csv"]


def test_seed_is_stable_across_processes():
    # A fixed value: Python's hash() of a str changes with every interpreter start, this must not.
    assert stable_hash("sample-natural") == int.from_bytes(
        __import__("hashlib").sha256(b"sample-natural").digest()[:8], "little")


def test_by_image_split_shares_no_source(tmp_path):
    setup_dataset(tmp_path, "toy", FIVE)
    info = crop_dataset(make_params("toy", {"n_train": 20, "n_test": 6, "split": "by_image", "test_share": 0.4}),
                        "toy", tmp_path)
    manifest = read_manifest("toy", tmp_path)
    train, test = (set(manifest[manifest.split == s].source) for s in ("train", "test"))
    assert train and test and not train & test
    assert len(test) == 2   # 40% of 5 images
    assert info["counts"] == {"train": 20, "test": 6}
    assert sorted(train | test) == sorted(FIVE)


def test_by_region_split_never_overlaps(tmp_path):
    images = {"big.png": textured(1, 160, 150), "small.png": textured(2, 130, 40)}
    setup_dataset(tmp_path, "toy", images)
    crop_dataset(make_params("toy", {"n_train": 40, "n_test": 12, "split": "by_region"}), "toy", tmp_path)
    manifest = read_manifest("toy", tmp_path)
    assert (manifest.split == "train").sum() == 40 and (manifest.split == "test").sum() == 12
    for source, rows in manifest.groupby("source"):
        height = images[source].shape[0]
        cut = height - round(height * 0.25)
        train = rows[rows.split == "train"]
        test = rows[rows.split == "test"]
        assert (train.y + HR <= cut).all() and (test.y >= cut).all()
        assert ((rows.x + HR <= images[source].shape[1]) & (rows.y + HR <= height)).all()
        for a in zip(train.x, train.y):
            assert not any(overlap(a, b, HR) for b in zip(test.x, test.y))


def test_bad_inputs_are_converted_or_skipped(tmp_path):
    h, w = 70, 60   # a test_share of 0.5 leaves 35 rows per split, enough for 32x32 crops
    grey = textured(3, h, w)[:, :, 0]
    rgba = np.dstack([textured(4, h, w), np.full((h, w), 7, np.uint8)])
    deep = textured(5, h, w).astype(np.uint16) * 257
    images = {
        "good.png": textured(6, h, w), "grey.png": grey, "rgba.png": rgba, "deep.png": deep,
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, "empty.jpg": b"",
        "tiny.png": textured(7, HR - 1, 200), "geo16.tif": textured(8, h, w).astype(np.uint16) * 257,
    }
    setup_dataset(tmp_path, "toy", images)
    params = make_params("toy", {"n_train": 30, "n_test": 8, "split": "by_region", "test_share": 0.5})
    info = crop_dataset(params, "toy", tmp_path)
    assert info["skipped"] == {"unreadable": 2, "too_small": 1}
    assert info["skipped_files"] == {"corrupt.png": "unreadable", "empty.jpg": "unreadable", "tiny.png": "too_small"}
    assert info["converted"] == {"greyscale": 1, "rgba": 1, "16bit": 2}
    manifest = read_manifest("toy", tmp_path)
    assert set(manifest.source) == {"good.png", "grey.png", "rgba.png", "deep.png", "geo16.tif"}
    expected = {"good.png": images["good.png"], "grey.png": np.dstack([grey] * 3),
                "rgba.png": rgba[:, :, :3], "deep.png": (deep // 257).astype(np.uint8),
                "geo16.tif": textured(8, h, w)}
    base = tmp_path / paths.crops_dir("toy")
    for row in manifest.itertuples():
        hr = cv2.imread(str(base / row.hr), cv2.IMREAD_UNCHANGED)
        assert hr.dtype == np.uint8 and hr.shape == (HR, HR, 3)
        assert np.array_equal(hr, expected[row.source][row.y:row.y + HR, row.x:row.x + HR])


def test_manifest_round_trip_through_load_pairs(tmp_path):
    setup_dataset(tmp_path, "toy", FIVE)
    crop_dataset(make_params("toy", {"n_train": 10, "n_test": 3, "split": "by_image"}), "toy", tmp_path)
    manifest = read_manifest("toy", tmp_path)
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    lr, hr, ids = load_pairs("toy", "test", tmp_path)
    assert lr.shape == (3, 3, HR // SCALE, HR // SCALE) and hr.shape == (3, 3, HR, HR)
    assert lr.dtype == hr.dtype == __import__("torch").uint8
    rows = manifest.set_index("id").loc[ids]
    for k, row in enumerate(rows.itertuples()):
        source = FIVE[row.source][row.y:row.y + HR, row.x:row.x + HR]
        rgb = cv2.cvtColor(source, cv2.COLOR_BGR2RGB)
        assert np.array_equal(hr[k].permute(1, 2, 0).numpy(), rgb)
        assert np.array_equal(lr[k].permute(1, 2, 0).numpy(),
                              cv2.resize(rgb, (HR // SCALE, HR // SCALE), interpolation=cv2.INTER_CUBIC))
    info = json.loads((tmp_path / paths.crops_dir("toy") / "info.json").read_text())
    assert info["counts"] == {"train": 10, "test": 3} and info["lr_size"] == HR // SCALE


def test_test_only_dataset_has_no_train_crops(tmp_path):
    setup_dataset(tmp_path, "toy", {"a.png": textured(1, 40, 40), "b.png": textured(2, 50, 40)})
    params = make_params("toy", {"n_train": 0, "n_test": 5, "split": "by_image"}, test_only=True)
    info = crop_dataset(params, "toy", tmp_path)
    assert info["counts"] == {"train": 0, "test": 5}
    assert set(read_manifest("toy", tmp_path).split) == {"test"}


def test_by_image_with_one_image_asks_for_by_region(tmp_path):
    setup_dataset(tmp_path, "toy", {"only.png": textured(1, 100, 100)})
    with pytest.raises(UserError, match=r"data\.toy\.crop\.split.*by_region"):
        crop_dataset(make_params("toy", {"n_train": 4, "n_test": 1, "split": "by_image"}), "toy", tmp_path)


def test_failure_midway_keeps_previous_output(tmp_path):
    setup_dataset(tmp_path, "toy", FIVE)
    params = make_params("toy", {"n_train": 6, "n_test": 2, "split": "by_image"})
    crop_dataset(params, "toy", tmp_path)
    before = snapshot(tmp_path, "toy")
    broken = copy.deepcopy(params)
    broken["crop"]["downscale"] = "lanczos"   # fails at the first LR image, after the output folder is started
    with pytest.raises(UserError, match="crop.downscale"):
        crop_dataset(broken, "toy", tmp_path)
    assert snapshot(tmp_path, "toy") == before
    assert [p.name for p in (tmp_path / paths.CROPS).iterdir()] == ["toy"]   # no temp folder left


def test_downscale_methods():
    hr = textured(9, 32, 32)
    area = downscale(hr, 4, "area")
    blocks = hr.reshape(8, 4, 8, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(area.astype(np.float64) - blocks).max() <= 0.5 + 1e-9
    smooth = downscale(hr, 4, "bicubic_antialias")
    sharp = downscale(hr, 4, "bicubic")
    assert smooth.shape == sharp.shape == (8, 8, 3) and smooth.dtype == np.uint8
    # Antialiasing averages the noise away: closer to the block means than plain bicubic sampling.
    assert np.abs(smooth - blocks).mean() < np.abs(sharp - blocks).mean()
    flat = np.full((32, 32, 3), 77, np.uint8)
    assert all((downscale(flat, 4, m) == 77).all() for m in ("bicubic", "bicubic_antialias", "area"))


def test_allocate_is_proportional_and_exact():
    for n, weights in ((10, [1, 1, 2]), (13, [5, 0, 7, 3]), (64, [2472 * 2299, 1035 * 1249, 400 * 400])):
        counts = allocate(n, weights)
        assert sum(counts) == n
        for c, w in zip(counts, weights):   # each within one crop of its exact proportional share
            assert abs(c - n * w / sum(weights)) < 1
    counts = allocate(7, [100, 300, 0, 600])
    assert sum(counts) == 7 and counts[2] == 0 and counts[3] >= counts[1] >= counts[0]
    assert allocate(0, [1, 2]) == [0, 0]


@pytest.mark.parametrize("method", DOWNSCALE_METHODS)
def test_every_kernel_gives_the_declared_size(method):
    image = textured(3, 40, 56)
    assert downscale(image, 4, method).shape == (10, 14, 3)
    out = resize(image, (24, 16), method)          # (width, height), as cv2.resize
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    flat = np.full((32, 48, 3), 77, np.uint8)
    assert (downscale(flat, 4, method) == 77).all()   # a flat image stays flat (normalised kernels, no dark border)


def test_matlab_kernel_is_matlab_imresize():
    """No MATLAB output ships in ../shared/fixtures: checked against MATLAB's algorithm (tests/matlab_imresize.py),
    on photographs, within one grey level (each dimension rounded to uint8 in turn, as MATLAB does)."""
    for photo in ("astronaut", "coffee"):
        hr = getattr(skdata, photo)()[100:196, 100:220]
        got = downscale(hr, 4, "matlab")
        assert got.shape == (24, 30, 3)
        assert np.abs(got.astype(int) - matlab_imresize.imresize(hr, 1 / 4)).max() <= 1, photo


def test_antialiased_kernels_average_fine_stripes_to_grey():
    """Stripes of period 3 (255, 0, 0) shrunk x4: antialiased kernels give their mean grey, the plain ones alias."""
    stripes = np.zeros((48, 48, 3), np.uint8)
    stripes[:, ::3] = 255
    matlab = downscale(stripes, 4, "matlab").astype(np.float64)
    assert abs(matlab[2:-2, 2:-2].mean() - 85) < 6 and matlab[2:-2, 2:-2].std() < 12
    for plain in ("bicubic", "bilinear"):
        aliased = downscale(stripes, 4, plain).astype(np.float64)
        assert aliased.std() > 40                                             # stripes survive as beats
        assert np.abs(aliased - matlab).mean() > 20                           # so matlab is not cv2's kernel
    assert downscale(stripes, 4, "bicubic_antialias").astype(np.float64)[2:-2, 2:-2].std() < 12


def halves(height: int, width: int) -> np.ndarray:
    """Left half blue, right half red (BGR), with a green band along the bottom quarter."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (255, 0, 0)
    image[:, width // 2:] = (0, 0, 255)
    image[height * 3 // 4:] = (0, 255, 0)
    return image


def test_resize_prep_keeps_each_whole_image(tmp_path):
    images = {f"wide{i}.png": halves(60, 120 + 8 * i) for i in range(4)}
    params = make_params("whole", {"prep": "resize", "n_train": 10, "n_test": 1, "split": "by_image"})
    params["crop"]["downscale"] = "area"
    setup_dataset(tmp_path, "whole", images)
    info = crop_dataset(params, "whole", tmp_path)
    assert info["prep"] == "resize" and info["counts"] == {"train": 3, "test": 1}   # one pair per image
    assert info["requested"] == {"train": 10, "test": 1}
    rows = read_manifest("whole", tmp_path)
    assert sorted(rows["source"]) == sorted(images)                       # every image once, no split shares one
    out = tmp_path / paths.crops_dir("whole")
    for row in rows.to_dict("records"):
        hr = cv2.imread(str(out / row["hr"]))
        lr = cv2.imread(str(out / row["lr"]))
        assert hr.shape == (HR, HR, 3) and lr.shape == (HR // SCALE, HR // SCALE, 3)
        # the whole image, stretched to a square: both halves and the bottom band are there
        assert (hr[2, 2] == (255, 0, 0)).all() and (hr[2, -3] == (0, 0, 255)).all() and (hr[-2, HR // 2] == (0, 255, 0)).all()
        assert abs(int((hr[: HR // 2, :, 0] > 128).sum()) - HR * HR // 4) <= HR   # blue covers the left half


def test_lr_from_source_resizes_the_source_not_the_hr(tmp_path):
    image = textured(5, 96, 128)
    params = make_params("lrsrc", {"prep": "resize", "n_train": 1, "n_test": 1, "split": "by_image"})
    params["crop"]["downscale"] = "bilinear"
    setup_dataset(tmp_path, "lrsrc", {"a.png": image, "b.png": textured(6, 96, 128)})
    out = tmp_path / paths.crops_dir("lrsrc")

    def pair(lr_from):
        params["crop"]["lr_from"] = lr_from
        crop_dataset(params, "lrsrc", tmp_path)
        row = read_manifest("lrsrc", tmp_path).set_index("source").loc["a.png"]
        return cv2.imread(str(out / row["hr"])), cv2.imread(str(out / row["lr"]))

    hr_a, lr_a = pair("hr")
    hr_b, lr_b = pair("source")
    assert (hr_a == hr_b).all()
    assert (lr_a == resize(hr_a, (8, 8), "bilinear")).all()
    assert (lr_b == resize(image, (8, 8), "bilinear")).all()       # the authors: cv2.resize(img, (64, 64))
    assert not (lr_a == lr_b).all()
