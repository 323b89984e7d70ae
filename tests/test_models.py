"""The networks of GCN 4.3.2 / SRGAN Fig. 4, and loading a trained strategy folder."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError
from pipeline.models import Bicubic, Extractor, Generator, load_sr_model, save_generator


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("upsample", ["pixelshuffle", "nearest"])
def test_generator_upscales_into_unit_range(scale, upsample):
    g = Generator(blocks=2, width=8, upsample=upsample, scale=scale).eval()
    x = torch.rand(2, 3, 5, 7) * 2 - 1
    y = g(x)
    assert y.shape == (2, 3, 5 * scale, 7 * scale)
    assert y.abs().max() <= 1


def test_generator_has_the_paper_layout():
    g = Generator()  # defaults: 10 residual blocks of 64 maps, two x2 sub-pixel stages
    assert len(g.body) == 10
    block = g.body[0].body
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.PReLU, nn.Conv2d, nn.BatchNorm2d]
    assert block[0].kernel_size == (3, 3) and block[0].out_channels == 64
    assert sum(isinstance(m, nn.PixelShuffle) for m in g.upsample) == 2
    with pytest.raises(UserError, match="crop.scale"):
        Generator(scale=5)


def test_discriminator_has_the_paper_layout():
    d = Extractor(image_size=64)  # defaults: 8 blocks 64..512, dense 1024
    convs = [block[0] for block in d.encoder]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.encoder[0])  # no BN on the first block
    assert all(isinstance(block[1], nn.BatchNorm2d) for block in d.encoder[1:])
    assert all(isinstance(block[-1], nn.LeakyReLU) and block[-1].negative_slope == 0.2 for block in d.encoder)
    dense = [m for m in d.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(512 * 4 * 4, 1024), (1024, 1)]


@pytest.mark.parametrize("size", [16, 32, 48])
def test_discriminator_probabilities_for_any_multiple_of_16(size):
    d = Extractor(image_size=size, blocks=8, width=4, dense=8).eval()
    p = d(torch.rand(3, 3, size, size) * 2 - 1)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    x = torch.rand(2, 3, size, size)
    assert torch.allclose(d(x), torch.sigmoid(d.logits(x)))
    with pytest.raises(UserError, match="divisible by 16"):
        Extractor(image_size=size + 8)


def test_phi_is_the_first_blocks_after_activation():
    d = Extractor(image_size=16, blocks=4, width=4, dense=8, decoder=True).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    first = F.leaky_relu(d.encoder[0][0](x), 0.2)
    assert torch.equal(d.features(x, 1), first)
    assert (d.features(x, 1) < 0).any()  # LeakyReLU output, not the ReLU-clipped map
    assert d.features(x, 2).shape == (2, 4, 8, 8)


def test_autoencoder_reconstructs_at_input_size():
    ae = Extractor(image_size=32, blocks=8, width=4, discriminator=False, decoder=True)
    assert ae.head is None
    y = ae.reconstruct(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert y.shape == (2, 3, 32, 32) and y.abs().max() <= 1
    # the decoder mirrors the encoder: widths back down to 3 channels
    convs = [m for m in ae.decoder if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (32, 32), (32, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4), (4, 3)]
    assert sum(isinstance(m, nn.Upsample) for m in ae.decoder) == 4


def test_load_sr_model_round_trip(tmp_path):
    arch = {"blocks": 2, "width": 8, "upsample": "nearest", "scale": 4}
    g = Generator(**arch)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.01)
    save_generator(g, arch, tmp_path / "generator.pt")
    (tmp_path / "config.json").write_text(json.dumps({"completed": True, "scale": 4}))
    model = load_sr_model(tmp_path)
    assert not model.training
    x = torch.rand(1, 3, 6, 6) * 2 - 1
    assert torch.equal(model(x), g.eval()(x))


def test_bicubic_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"untrained": True, "scale": 4}))
    model = load_sr_model(tmp_path)
    assert isinstance(model, Bicubic)
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.equal(model(x), F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1))
    with pytest.raises(UserError, match="train stage"):
        load_sr_model(tmp_path / "missing")
