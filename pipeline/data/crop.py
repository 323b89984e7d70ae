"""The crop stage: deterministic HR images and their LR versions, split disjointly into train/test.

Two preparations (`data.<name>.crop.prep`):
- `crop`: random HR crops of `crop.hr_size` pixels, as the paper's Sat set (random 256x256 crops of
  one 7205x7205 image, section 4.3.1);
- `resize`: each whole image resized to hr_size x hr_size (aspect not kept), one pair per image, as
  the authors' Keras DataLoader does for ImageNet and DTD (cv2.resize of the whole image to 256x256).
The LR image is made with the `crop.downscale` kernel, either from the HR image (`crop.lr_from: hr`,
the SR convention) or from the source image itself (`source`, the authors: cv2.resize(img, (64, 64))).
With `resize` the HR image is resized with the same kernel. The counts and split policy come from
`data.<name>.crop`. The test split never overlaps the training one:
- `by_image`: a seeded share (`test_share`) of the source images is kept for test only
  (with `resize`: n_test seeded images are the test set, the rest the training set);
- `by_region` (crop only): the bottom `test_share` rows of every image are the test region, and
  every crop lies fully inside its split's region, so no train and test crop share a pixel.
Bad inputs never stop the stage midway: unreadable files and images smaller than hr_size are
skipped, greyscale / RGBA / 16-bit / float images are converted to 8-bit RGB; each kind is
counted in the log and in info.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline import paths
from pipeline.config import DOWNSCALE_METHODS, dataset_spec
from pipeline.data import kernels
from pipeline.data.imageset import MANIFEST_COLUMNS
from pipeline.data.sources import read_record
from pipeline.errors import UserError
from pipeline.fileio import staged

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
CACHE_BYTES = 1 << 30   # decoded images kept between the two passes up to this much memory
CV2_FLAGS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}

try:   # libtiff warns about every GeoTIFF tag it does not know; those are not our user's problem
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # pragma: no cover - older OpenCV builds
    pass


class BadImage(Exception):
    """An input file that cannot be used; its message is the skip reason."""


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string that is the same in every process (unlike Python's hash())."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def to_bgr8(image: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """An HxWx3 uint8 BGR image from whatever OpenCV decoded, and the conversions applied."""
    conversions = []
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)   # 65535 -> 255
        conversions.append("16bit")
    elif image.dtype in (np.float32, np.float64):
        finite = np.nan_to_num(image.astype(np.float32))
        scale = 255.0 if finite.max(initial=0.0) <= 1.0 else 1.0   # [0,1] floats or already [0,255]
        image = np.clip(np.round(finite * scale), 0, 255).astype(np.uint8)
        conversions.append("float")
    elif image.dtype != np.uint8:
        raise BadImage("unsupported")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        conversions.append("greyscale")
    elif image.ndim == 3 and image.shape[2] == 2:   # grey + alpha
        image = cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
        conversions += ["greyscale", "rgba"]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])   # alpha dropped: the colour values are kept as they are
        conversions.append("rgba")
    elif image.ndim == 3 and image.shape[2] > 4:
        image = np.ascontiguousarray(image[:, :, :3])   # multispectral: the first three bands
        conversions.append("multiband")
    elif image.ndim != 3:
        raise BadImage("unsupported")
    return image, conversions


def load_image(path: Path, hr_size: int) -> tuple[np.ndarray, list[str]]:
    """Decode one image as 8-bit BGR; BadImage('unreadable' | 'too_small' | 'unsupported') if unusable."""
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise BadImage("unreadable")
    image, conversions = to_bgr8(image)
    if min(image.shape[:2]) < hr_size:
        raise BadImage("too_small")
    return image, conversions


def resize(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """An HxWx3 uint8 image resized to size = (width, height) with one of config.DOWNSCALE_METHODS.

    - bicubic: OpenCV's bicubic (a = -0.75), no antialiasing (the usual Keras/OpenCV pipelines);
    - bilinear: OpenCV's default (cv2.resize without `interpolation`), the authors' choice; aliased
      when shrinking by more than 2;
    - area: OpenCV's pixel-area average;
    - bicubic_antialias: torch's bicubic (a = -0.75) with the kernel widened by the scale (as PIL);
    - matlab: MATLAB's imresize (bicubic a = -0.5, kernel widened by the scale, symmetric borders,
      uint8 arithmetic), pipeline.data.kernels, the SR literature's convention (DIV2K, Set5/14 "bicubic" LR images).
    """
    width, height = size
    if method in CV2_FLAGS:
        return cv2.resize(image, (width, height), interpolation=CV2_FLAGS[method])
    if method == "bicubic_antialias":
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().unsqueeze(0)
        y = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        return y.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()
    if method == "matlab":
        return kernels.matlab_resize(image, (height, width, image.shape[2]), quantize=True).astype(np.uint8)
    raise UserError(f"crop.downscale: invalid value {method!r}; valid choices: {', '.join(DOWNSCALE_METHODS)}")


def downscale(hr: np.ndarray, scale: int, method: str) -> np.ndarray:
    """The LR image of an HR image (uint8 HxWx3): each side divided by `scale` with `method`."""
    return resize(hr, (hr.shape[1] // scale, hr.shape[0] // scale), method)


def allocate(n: int, weights: list[int]) -> list[int]:
    """Split n crops across regions in proportion to their weights (largest remainder, ties by order)."""
    total = sum(weights)
    if n == 0 or total == 0:
        return [0] * len(weights)
    exact = [n * w / total for w in weights]
    counts = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def plan_regions(shapes: dict[str, tuple[int, int]], policy: dict, hr: int, rng: np.random.Generator) -> list[tuple]:
    """(source, split, y0, y1) row bands, full width, that each split's crops must lie inside."""
    names = sorted(shapes)
    regions = []
    if policy["n_train"] == 0:
        return [(name, "test", 0, shapes[name][0]) for name in names]
    if policy["split"] == "by_image":
        if len(names) < 2:
            raise UserError(f"data.{policy['dataset']}.crop.split: by_image needs at least 2 usable images, "
                            f"found {len(names)}; use split: by_region")
        n_test = min(len(names) - 1, max(1, round(len(names) * policy["test_share"])))
        test = {names[i] for i in rng.permutation(len(names))[:n_test]}
        return [(name, "test" if name in test else "train", 0, shapes[name][0]) for name in names]
    for name in names:   # by_region: the bottom test_share rows are test
        height = shapes[name][0]
        cut = height - int(round(height * policy["test_share"]))
        if cut >= hr:
            regions.append((name, "train", 0, cut))
        if height - cut >= hr:
            regions.append((name, "test", cut, height))
    return regions


def disjoint_squares(regions: list[tuple], shapes: dict[str, tuple[int, int]], hr: int) -> dict[str, int]:
    """How many non-overlapping hr x hr squares fit in each split's regions (a grid in every band).

    Random crops of one region overlap one another, so this count, not the number of crops, bounds how
    many independent test images a `by_region` split can give (pipeline.lease states it for the intervals).
    """
    counts = {split: 0 for split in SPLITS}
    for source, split, y0, y1 in regions:
        counts[split] += ((y1 - y0) // hr) * (shapes[source][1] // hr)
    return counts


def region_shapes(params: dict, name: str, root: Path = Path(".")) -> tuple[list[tuple], dict[str, tuple[int, int]]]:
    """The (source, split, y0, y1) regions of a `prep: crop` dataset and the usable images' (height, width)."""
    spec = dataset_spec(params, name)
    policy = dict(spec["crop"], dataset=name)
    hr, seed = params["crop"]["hr_size"], params["crop"].get("seed", 0)
    record, files = read_record(root / paths.raw_dir(name))
    shapes = {}
    for entry, path in zip(record["files"], files):
        try:
            shapes[entry["path"]] = load_image(path, hr)[0].shape[:2]
        except BadImage:
            continue
    rng = np.random.default_rng([seed, stable_hash(name), 1])   # as crop_dataset draws it
    return plan_regions(shapes, policy, hr, rng), shapes


def plan_images(names: list[str], policy: dict, rng: np.random.Generator) -> dict[str, list[str]]:
    """prep: resize: the whole images of each split, one HR/LR pair each (n_test for test, up to n_train)."""
    order = [names[i] for i in rng.permutation(len(names))]
    n_test = min(policy["n_test"], len(order) if policy["n_train"] == 0 else len(order) - 1)
    if policy["n_train"] and n_test < 1:
        raise UserError(f"data.{policy['dataset']}.crop: prep resize needs at least 2 usable images, found {len(names)}")
    return {"test": sorted(order[:n_test]), "train": sorted(order[n_test:n_test + policy["n_train"]])}


def crop_dataset(params: dict, name: str, root: Path = Path(".")) -> dict:
    """The crop stage for one dataset: write data/crops/<name>/ and return its info dict."""
    start = time.perf_counter()
    spec = dataset_spec(params, name)
    policy = dict(spec["crop"], dataset=name)
    if spec["test_only"]:
        policy["n_train"] = 0
    crop = params["crop"]
    hr, scale, method, seed = crop["hr_size"], crop["scale"], crop.get("downscale", "bicubic"), crop.get("seed", 0)
    lr_from, prep = crop.get("lr_from", "hr"), policy["prep"]
    record, files = read_record(root / paths.raw_dir(name))
    sources = [entry["path"] for entry in record["files"]]
    path_of = dict(zip(sources, files))
    base = stable_hash(name)

    # Pass 1: decode every file once, count what is skipped or converted.
    shapes, cache, cached_bytes = {}, {}, 0
    skipped: dict[str, int] = {}
    converted: dict[str, int] = {}
    skipped_files: dict[str, str] = {}
    for source, path in tqdm(list(zip(sources, files)), desc=f"{name}: reading", disable=None):
        try:
            image, conversions = load_image(path, hr)
        except BadImage as err:
            reason = str(err)
            skipped[reason] = skipped.get(reason, 0) + 1
            skipped_files[source] = reason
            log.warning("%s: skipped %s (%s)", name, source, reason)
            continue
        for kind in conversions:
            converted[kind] = converted.get(kind, 0) + 1
        shapes[source] = image.shape[:2]
        if cached_bytes + image.nbytes <= CACHE_BYTES:
            cache[source] = (image, conversions)
            cached_bytes += image.nbytes
    if not shapes:
        raise UserError(f"data.{name}: none of the {len(sources)} raw images is usable "
                        f"(skipped: {skipped}); crop.hr_size is {hr}")

    # Plan: (source, split, y0, y1, k) = k crops of `source` inside rows y0..y1 (prep: resize: k = 1, whole image).
    rng = np.random.default_rng([seed, base, 1])
    plan = []
    if prep == "resize":
        chosen = plan_images(sorted(shapes), policy, rng)
        plan = [(src, split, 0, shapes[src][0], 1) for split in SPLITS for src in chosen[split]]
        for split in SPLITS:
            wanted = policy["n_train"] if split == "train" else policy["n_test"]
            if len(chosen[split]) < wanted:
                log.warning("%s: %d %s images requested, %d usable images available", name, wanted, split,
                            len(chosen[split]))
    else:
        regions = plan_regions(shapes, policy, hr, rng)
        for split in SPLITS:
            band = [r for r in regions if r[1] == split]
            weights = [(y1 - y0 - hr + 1) * (shapes[src][1] - hr + 1) for src, _, y0, y1 in band]
            n = policy["n_train"] if split == "train" else policy["n_test"]
            if n and not band:
                raise UserError(f"data.{name}.crop: no {split} region of at least {hr}x{hr} pixels "
                                f"(split {policy['split']}, test_share {policy['test_share']}); lower crop.hr_size or change the split")
            plan += [(*r, k) for r, k in zip(band, allocate(n, weights))]

    # Pass 2: write the pairs, image by image, into a folder that replaces the old one at the end.
    rows = []
    serial = {split: 0 for split in SPLITS}
    out_dir = root / paths.crops_dir(name)
    lr_size = hr // scale
    with staged(out_dir) as tmp:
        for split in SPLITS:
            for kind in ("hr", "lr"):
                (tmp / split / kind).mkdir(parents=True)
        for source, split, y0, y1, k in tqdm(plan, desc=f"{name}: {prep}", disable=None):
            if k == 0:
                continue
            image = cache[source][0] if source in cache else load_image(path_of[source], hr)[0]
            height, width = shapes[source]
            if prep == "resize":
                pairs = [(0, 0, height, width, resize(image, (hr, hr), method))]
            else:
                rng = np.random.default_rng([seed, base, stable_hash(source), SPLITS.index(split)])
                xs = rng.integers(0, width - hr + 1, size=k)
                ys = rng.integers(y0, y1 - hr + 1, size=k)
                pairs = [(x, y, hr, hr, np.ascontiguousarray(image[y:y + hr, x:x + hr]))
                         for x, y in zip(xs.tolist(), ys.tolist())]
            for x, y, h, w, hr_image in pairs:
                # lr_from source: the LR image is made from the same source pixels, not from the HR image
                lr_image = (resize(image[y:y + h, x:x + w], (lr_size, lr_size), method) if lr_from == "source"
                            else downscale(hr_image, scale, method))
                crop_id = f"{split}-{serial[split]:06d}"
                serial[split] += 1
                rel_hr, rel_lr = f"{split}/hr/{crop_id}.png", f"{split}/lr/{crop_id}.png"
                for rel, pixels in ((rel_hr, hr_image), (rel_lr, lr_image)):
                    if not cv2.imwrite(str(tmp / rel), pixels):
                        raise UserError(f"{out_dir / rel}: cannot write PNG")
                # size: the side of the source square a crop covers; a resized whole image records its own size
                rows.append({"id": crop_id, "split": split, "source": source, "x": x, "y": y,
                             "size": hr if prep == "crop" else f"{w}x{h}", "hr": rel_hr, "lr": rel_lr})
        _write_manifest(tmp / "manifest.csv", rows)
        info = {
            "dataset": name,
            "source_type": record.get("type"),
            "counts": {split: serial[split] for split in SPLITS},
            "requested": {"train": policy["n_train"], "test": policy["n_test"]},
            "images": {split: sorted({p[0] for p in plan if p[1] == split and p[4]}) for split in SPLITS},
            "prep": prep,
            "split": policy["split"],
            "test_share": policy["test_share"],
            "hr_size": hr,
            "scale": scale,
            "lr_size": lr_size,
            "downscale": method,
            "lr_from": lr_from,
            "seed": seed,
            "raw_images": len(sources),
            "skipped": skipped,
            "skipped_files": skipped_files,
            "converted": converted,
        }
        info["seconds"] = round(time.perf_counter() - start, 3)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("%s: %d train / %d test %s pairs, HR %dx%d, LR x%d by %s from the %s; %d images; skipped %s; "
             "converted %s; %.1f s", name, serial["train"], serial["test"], prep, hr, hr, scale, method, lr_from,
             len(shapes), skipped or "none", converted or "none", info["seconds"])
    return info


def _write_manifest(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
