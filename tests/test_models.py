"""The networks of GCN 4.3.2 / SRGAN Fig. 4, and loading a trained strategy folder."""

from __future__ import annotations

import json
from pathlib import Path

import matlab_imresize
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from skimage import data as skdata
from torch import nn

from pipeline.config import load_params
from pipeline.errors import UserError
from pipeline.nets.networks import Bicubic, Extractor, Generator, ResidualBlock, load_sr_model, save_generator
from pipeline.nets.upscale import super_resolve

REPO = Path(__file__).resolve().parents[1]


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
    assert len(g.body) == 10 and all(isinstance(b, ResidualBlock) for b in g.body)
    block = g.body[0].body
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.PReLU, nn.Conv2d, nn.BatchNorm2d]
    assert block[0].kernel_size == (3, 3) and block[0].out_channels == 64
    # 9x9 head and tail convolutions (SRGAN Fig. 4, the authors' kernel_size=9), PReLU after the head
    assert g.head[0].kernel_size == (9, 9) and g.tail.kernel_size == (9, 9) and g.tail.out_channels == 3
    assert isinstance(g.head[1], nn.PReLU)
    # each upsampling stage: conv3x3 to 256 maps, sub-pixel x2, then PReLU
    assert [type(m) for m in g.upsample] == [nn.Conv2d, nn.PixelShuffle, nn.PReLU] * 2
    assert [m.out_channels for m in g.upsample if isinstance(m, nn.Conv2d)] == [256, 256]
    with pytest.raises(UserError, match="crop.scale"):
        Generator(scale=5)
    with pytest.raises(UserError, match="upsample"):
        Generator(upsample="bilinear")


def test_generator_nearest_upsampling_is_the_authors():
    """gcn.py deconv2d: Conv2D(256, 3) at the lower resolution, UpSampling2D(2), PReLU; tail 9x9 from 256 maps."""
    g = Generator(blocks=1, width=64, upsample="nearest")
    assert [type(m) for m in g.upsample] == [nn.Conv2d, nn.Upsample, nn.PReLU] * 2
    convs = [m for m in g.upsample if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 256), (256, 256)]
    assert g.tail.in_channels == 256
    x = torch.rand(1, 3, 4, 4) * 2 - 1
    assert g(x).shape == (1, 3, 16, 16)


def test_generator_long_skip_prelu_and_tanh():
    """With the body's output zeroed (last BN's scale and shift = 0) only the long skip carries the head."""
    g = Generator(blocks=3, width=8, scale=4).eval()
    x = torch.rand(2, 3, 6, 6) * 2 - 1
    with torch.no_grad():
        head = g.head(x)
        assert torch.allclose(g(x), torch.tanh(g.tail(g.upsample(head + g.post(g.body(head))))), atol=1e-6)
        g.post[1].weight.zero_()
        g.post[1].bias.zero_()
        expected = torch.tanh(g.tail(g.upsample(g.head(x))))
        assert torch.allclose(g(x), expected, atol=1e-6)
        assert g(x).std() > 0  # the input still reaches the output: the skip is there
        # PReLU after each upsampling stage: a negative slope of 0 clips the stage's output at 0
        for m in g.upsample:
            if isinstance(m, nn.PReLU):
                m.weight.fill_(0.0)
        stage = g.upsample[:3](g.head(x))
        assert stage.min() >= 0 and (g.upsample[:2](g.head(x)) < 0).any()
        # tanh output: the tail's large pre-activations saturate at +-1
        g.tail.weight.mul_(1e3)
        y = g(x)
        assert y.abs().max() <= 1 and (y.abs() > 0.999).any()


def test_residual_block_has_an_identity_skip():
    block = ResidualBlock(8).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        assert torch.allclose(block(x), x + block.body(x)) and not torch.allclose(block(x), x)
        block.body[4].weight.zero_()
        block.body[4].bias.zero_()
        assert torch.equal(block(x), x)


@pytest.mark.parametrize("momentum", [0.2, 0.01])
def test_batchnorm_momentum_is_honoured(momentum):
    g = Generator(blocks=2, width=8, bn_momentum=momentum)
    d = Extractor(image_size=16, blocks=4, width=4, dense=8, decoder=True, bn_momentum=momentum)
    encoder_bns = [m for m in d.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {m.momentum for m in g.modules() if isinstance(m, nn.BatchNorm2d)} == {momentum}
    assert {m.momentum for m in encoder_bns} == {momentum}
    assert {m.momentum for m in d.decoder.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}  # Keras 0.9
    # behaviour: one training forward moves the running mean from 0 by `momentum` of the batch mean
    x = torch.randn(4, 3, 16, 16) + 3
    with torch.no_grad():
        conv_out = d.encoder[2][0](d.features(x, 2))  # block 3 is the first with BN (plain_blocks=2)
        d.features(x, 3)
    bn = d.encoder[2][1]
    assert torch.allclose(bn.running_mean, momentum * conv_out.mean(dim=(0, 2, 3)), atol=1e-5)


@pytest.mark.parametrize("plain", [1, 2])
def test_discriminator_has_the_paper_layout(plain):
    d = Extractor(image_size=64, head="flatten", plain_blocks=plain)  # 8 blocks 64..512, dense 1024
    convs = [block[0] for block in d.encoder]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    # no BN on the first block (SRGAN Fig. 4) or the first two (the authors' bn=False on block_1, block_2)
    assert [any(isinstance(m, nn.BatchNorm2d) for m in block) for block in d.encoder] == [False] * plain + [True] * (8 - plain)
    assert all(isinstance(block[-1], nn.LeakyReLU) and block[-1].negative_slope == 0.2 for block in d.encoder)
    assert [type(m) for m in d.head] == [nn.Flatten, nn.Linear, nn.LeakyReLU, nn.Linear]
    dense = [m for m in d.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(512 * 4 * 4, 1024), (1024, 1)]
    assert d.logits(torch.rand(2, 3, 64, 64)).shape == (2,)
    with pytest.raises(UserError, match="head"):
        Extractor(image_size=64, head="dense")


def test_patch_head_is_the_dense_layers_per_position():
    """Keras Dense on the authors' (16,16,512) map = the same two dense layers at each of the 16x16 positions."""
    d = Extractor(image_size=256)  # the default head is the authors' patch head
    assert sum(p.numel() for p in d.head.parameters()) == 512 * 1024 + 1024 + 1024 + 1  # 0.53 M (flatten: 134 M)
    small = Extractor(image_size=32, blocks=4, width=4, dense=6).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    logits = small.logits(x)
    assert logits.shape == (2, 8, 8)
    features = small.encode(x).permute(0, 2, 3, 1)  # (N, h, w, C): dense layers on the last axis
    conv1, conv2 = small.head[0], small.head[2]
    hidden = F.leaky_relu(F.linear(features, conv1.weight.flatten(1), conv1.bias), 0.2)
    expected = F.linear(hidden, conv2.weight.flatten(1), conv2.bias).squeeze(-1)
    assert torch.allclose(logits, expected, atol=1e-6)
    assert torch.allclose(small(x), torch.sigmoid(logits))
    # a position's probability depends on its own receptive field only: change the top-left corner
    y = x.clone()
    y[:, :, :4, :4] = 1.0
    changed = (small.logits(y) - logits).abs() > 1e-7
    assert changed[:, 0, 0].all() and not changed[:, 4:, 4:].any()


@pytest.mark.parametrize("size", [16, 32, 48])
def test_discriminator_probabilities_for_any_multiple_of_16(size):
    d = Extractor(image_size=size, blocks=8, width=4, dense=8, head="flatten").eval()
    p = d(torch.rand(3, 3, size, size) * 2 - 1)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    patches = Extractor(image_size=size, blocks=8, width=4, dense=8, head="patch").eval()
    assert patches(torch.rand(3, 3, size, size)).shape == (3, size // 16, size // 16)
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
    # mirror image: each upsampling undoes a strided block, so it comes first (block 8 strides, block 7 not)
    assert [type(m) for m in ae.decoder[:5]] == [nn.Upsample, nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU, nn.Conv2d]


@pytest.mark.parametrize("output,low,high", [("tanh", -1.0, 1.0), ("sigmoid", 0.0, 1.0)])
def test_decoder_output_activation(output, low, high):
    """tanh spans the [-1,1] image range; the authors' sigmoid cannot output a negative (dark) pixel."""
    ae = Extractor(image_size=16, blocks=2, width=4, discriminator=False, decoder=True, decoder_output=output)
    with torch.no_grad():
        ae.decoder[-2].bias.fill_(-50.0)  # drive the last conv far negative: the output saturates at `low`
        y = ae.reconstruct(torch.rand(2, 3, 16, 16))
    assert torch.allclose(y, torch.full_like(y, low), atol=1e-6)
    with torch.no_grad():
        ae.decoder[-2].bias.fill_(50.0)
        assert torch.allclose(ae.reconstruct(torch.rand(2, 3, 16, 16)), torch.tensor(high), atol=1e-6)
    with pytest.raises(UserError, match="decoder_output"):
        Extractor(image_size=16, blocks=2, decoder=True, decoder_output="relu")


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


@pytest.mark.parametrize("profile, kernel", [("params.yaml", "opencv"), ("configs/cpu-reference-authors.yaml", "opencv"),
                                             ("configs/paper.yaml", "opencv"), ("configs/srgan.yaml", "matlab")])
def test_bicubic_follows_the_convention_of_the_profiles_lr_images(tmp_path, profile, kernel):
    """The default (OpenCV bicubic LR) and the authors' profiles (cv2 bilinear LR) upscale with OpenCV's bicubic;
    SRGAN's (MATLAB LR, the Set5/Set14 convention) with MATLAB's. A folder's config.json carries its profile's crop."""
    crop = {**load_params(REPO / "params.yaml")["crop"], **(yaml.safe_load((REPO / profile).read_text()).get("crop") or {})}
    (tmp_path / "config.json").write_text(json.dumps({"untrained": True, "scale": 4, "crop": crop}))
    assert load_sr_model(tmp_path).kernel == kernel
    assert load_sr_model(tmp_path, bicubic_kernel="matlab").kernel == "matlab"    # the SR protocol's choice


def test_matlab_bicubic_is_imresize_of_the_uint8_image():
    """Bicubic('matlab') on an LR image (tiled as pipeline.nets.upscale runs it) equals MATLAB's imresize(lr, 4) within one
    grey level (tests/matlab_imresize.py: MATLAB's algorithm), on photographs whose overshoots saturate."""
    for photo in ("astronaut", "camera", "coffee"):
        image = getattr(skdata, photo)()[100:196, 100:220]
        hr = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        lr = matlab_imresize.imresize(hr, 1 / 4)
        expected = matlab_imresize.imresize(lr, 4).astype(int)
        sr = super_resolve(Bicubic(4, "matlab"), lr, 4, tile=8)
        assert sr.shape == expected.shape and np.abs(sr.astype(int) - expected).max() <= 1, photo
        opencv = super_resolve(Bicubic(4, "opencv"), lr, 4, tile=0).astype(int)
        assert np.abs(opencv - expected).max() > 1                        # so the kernels differ on this image
