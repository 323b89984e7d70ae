"""The networks of the GCN paper (4.3.2), which are SRGAN's (Ledig et al., Fig. 4).

- `Generator`: SRResNet, the mapping F from LR to SR images in [-1,1].
- `Extractor`: the discriminator's convolutional encoder with an optional discriminator head
  (two dense layers, sigmoid; per position or on the flattened map, `head`) and an optional
  symmetric decoder (the auto-encoder's reconstruction head). Phi, the feature extractor of the
  GCN loss, is always the output of the encoder's first `feature_layer` blocks, taken after
  their activation.

Where the paper is silent the authors' released Keras code (melaseddik/GCN, gcn.py) is the
reference; the keyword arguments name each choice so params.yaml can pick SRGAN's or theirs.
- `Bicubic`: the untrained baseline with the generator's interface (OpenCV's or MATLAB's bicubic).
- `load_sr_model`: the trained (or bicubic) model of one strategy folder, ready to evaluate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data import kernels
from pipeline.errors import UserError

LEAKY_SLOPE = 0.2  # LeakyReLU alpha of the discriminator (SRGAN 2.1, GCN 4.3.2)
BN_MOMENTUM = 0.2  # torch convention (weight of the new batch); the authors' Keras momentum=0.8
DECODER_BN_MOMENTUM = 0.1  # the authors' decoder uses Keras momentum=0.9, i.e. torch's default
HEADS = ("patch", "flatten")
DECODER_OUTPUTS = ("tanh", "sigmoid")


def upsampling_factors(scale: int) -> list[int]:
    """The learned upsampling stages for a scale: x2 stages (SRGAN uses two for x4), or one x3."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise UserError(f"crop.scale: {scale} is not supported by the generator; use 2, 3, 4 or 8")


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity skip (SRGAN Fig. 4)."""

    def __init__(self, width: int, bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width, momentum=bn_momentum), nn.PReLU(width),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width, momentum=bn_momentum),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """SRResNet (SRGAN Fig. 4) with `blocks` residual blocks and a tanh output (GCN 4.3.3).

    head: conv9x9 - PReLU; body: the residual blocks, then conv3x3 - BN, added to the head's
    output (the long skip); one upsampling stage per factor of `scale`, each ending in PReLU;
    tail: conv9x9 to 3 channels, tanh. Each upsampling stage first convolves (3x3) to
    width * factor^2 maps, then `upsample` is `pixelshuffle` (SRGAN's sub-pixel convolution,
    back to `width` maps) or `nearest` (nearest-neighbour upsampling that keeps the
    width * factor^2 maps, as in the authors' code: Conv2D(256) - UpSampling2D - PReLU).
    `bn_momentum` is torch's BatchNorm momentum (1 - Keras momentum).
    """

    def __init__(self, blocks: int = 10, width: int = 64, upsample: str = "pixelshuffle", scale: int = 4,
                 bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        if upsample not in ("pixelshuffle", "nearest"):
            raise UserError(f"train.generator.upsample: invalid value {upsample!r}; valid choices: pixelshuffle, nearest")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(3, width, 9, padding=4), nn.PReLU(width))
        self.body = nn.Sequential(*[ResidualBlock(width, bn_momentum) for _ in range(blocks)])
        self.post = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width, momentum=bn_momentum))
        stages: list[nn.Module] = []
        maps = width
        for factor in upsampling_factors(scale):
            stages.append(nn.Conv2d(maps, width * factor ** 2, 3, padding=1))
            if upsample == "pixelshuffle":
                stages.append(nn.PixelShuffle(factor))
                maps = width
            else:
                stages.append(nn.Upsample(scale_factor=factor, mode="nearest"))
                maps = width * factor ** 2
            stages.append(nn.PReLU(maps))
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(maps, 3, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        features = head + self.post(self.body(head))  # the long skip of SRGAN Fig. 4
        return torch.tanh(self.tail(self.upsample(features)))


def encoder_widths(blocks: int, width: int) -> list[int]:
    """Output widths of the encoder blocks: 64, 64, 128, 128, 256, 256, 512, 512 for SRGAN's 8 blocks."""
    return [width * 2 ** (i // 2) for i in range(blocks)]


def encoder_strides(blocks: int) -> list[int]:
    """Stride 2 on every second block, i.e. after each doubling of the width (SRGAN Fig. 4)."""
    return [2 if i % 2 else 1 for i in range(blocks)]


def encoder_reduction(blocks: int) -> int:
    """How much the encoder divides the image side (16 for 8 blocks)."""
    return 2 ** sum(s == 2 for s in encoder_strides(blocks))


class Extractor(nn.Module):
    """The discriminator / auto-encoder network of GCN 4.3.2, whose first blocks are Phi.

    Encoder: `blocks` conv3x3 blocks (BN except on the first `plain_blocks` blocks, LeakyReLU
    0.2), widths doubling every two blocks from `width`, stride 2 on every second block.
    SRGAN Fig. 4 leaves BN out of the first block only; the authors' code out of the first two.

    `discriminator` adds dense(`dense`) - LeakyReLU - dense(1) - sigmoid on the encoder output:
    `head="flatten"` applies it to the flattened map (SRGAN's 96 px design; 134 M parameters at
    256 px), `head="patch"` to each position of the map, as Keras' Dense does on the authors'
    4-D tensor (a 1x1 convolution; a 16x16 patch of probabilities at 256 px, 0.5 M parameters,
    the loss then averages over positions). `logits` is (N,) for flatten and (N, h, w) for patch.

    `decoder` adds a mirror image of the encoder (nearest x2 upsampling where the encoder
    strides, conv3x3, BN, LeakyReLU) ending in a conv to 3 channels and `decoder_output`:
    `tanh` matches the [-1,1] image range; `sigmoid` is the authors' code (its outputs cannot
    be negative, so dark pixels are never reconstructed exactly). With both heads the encoder,
    hence Phi, is shared by the two problems (P/dis,rec and P/adv,rec, as in the authors' code).
    `bn_momentum` (torch convention) applies to the encoder; the decoder keeps torch's 0.1,
    which is the authors' Keras momentum=0.9 there.
    """

    def __init__(self, image_size: int, blocks: int = 8, width: int = 64, dense: int = 1024,
                 discriminator: bool = True, decoder: bool = False, head: str = "patch",
                 plain_blocks: int = 2, decoder_output: str = "tanh", bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        if head not in HEADS:
            raise UserError(f"train.discriminator.head: invalid value {head!r}; valid choices: {', '.join(HEADS)}")
        if decoder_output not in DECODER_OUTPUTS:
            raise UserError(f"train.discriminator.decoder_output: invalid value {decoder_output!r}; "
                            f"valid choices: {', '.join(DECODER_OUTPUTS)}")
        reduction = encoder_reduction(blocks)
        if image_size % reduction:
            raise UserError(f"crop.hr_size: {image_size} is not divisible by {reduction}, which the "
                            f"{blocks}-block discriminator needs; use a multiple of {reduction}")
        widths, strides = encoder_widths(blocks, width), encoder_strides(blocks)
        inputs = [3] + widths[:-1]
        self.encoder = nn.ModuleList()
        for i, (c_in, c_out, stride) in enumerate(zip(inputs, widths, strides)):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)]
            if i >= plain_blocks:
                layers.append(nn.BatchNorm2d(c_out, momentum=bn_momentum))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
            self.encoder.append(nn.Sequential(*layers))
        self.head = None
        if discriminator and head == "flatten":
            side = image_size // reduction
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, dense),
                                      nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(dense, 1))
        elif discriminator:
            self.head = nn.Sequential(nn.Conv2d(widths[-1], dense, 1), nn.LeakyReLU(LEAKY_SLOPE),
                                      nn.Conv2d(dense, 1, 1))
        self.decoder = None
        if decoder:
            layers = []
            for i in reversed(range(blocks)):
                if strides[i] == 2:
                    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                if i == 0:
                    layers += [nn.Conv2d(widths[0], 3, 3, padding=1),
                               nn.Tanh() if decoder_output == "tanh" else nn.Sigmoid()]
                else:
                    layers += [nn.Conv2d(widths[i], inputs[i], 3, padding=1),
                               nn.BatchNorm2d(inputs[i], momentum=DECODER_BN_MOMENTUM), nn.LeakyReLU(LEAKY_SLOPE)]
            self.decoder = nn.Sequential(*layers)

    def features(self, images: torch.Tensor, layer: int) -> torch.Tensor:
        """Phi: the output of the first `layer` encoder blocks (after their activation)."""
        for block in self.encoder[:layer]:
            images = block(images)
        return images

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images, len(self.encoder))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminator's pre-sigmoid output, (N,) or (N, h, w) per patch; the losses use it for stability."""
        if self.head is None:
            raise RuntimeError("this extractor has no discriminator head")
        return self.head(self.encode(images)).squeeze(1)  # (N,1) -> (N,); (N,1,h,w) -> (N,h,w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The probability that each image (flatten) or each patch (patch) is real HR, (N,) or (N, h, w)."""
        return torch.sigmoid(self.logits(images))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Psi2(Phi(y)): the auto-encoder's reconstruction, in [-1,1] (tanh) or [0,1] (sigmoid)."""
        if self.decoder is None:
            raise RuntimeError("this extractor has no decoder head")
        return self.decoder(self.encode(images))


class Bicubic(nn.Module):
    """Bicubic upsampling, clamped to [-1,1]: the untrained baseline.

    `kernel` (pipeline.data.kernels.BICUBIC_KERNELS): `opencv`, PyTorch's bicubic (a = -0.75,
    align_corners=False, as cv2.INTER_CUBIC), or `matlab`, MATLAB's imresize of the uint8 LR image
    (a = -0.5, mirrored borders, each dimension rounded to uint8 as MATLAB does; computed in
    float64 on the CPU, milliseconds per image).
    """

    def __init__(self, scale: int, kernel: str = kernels.OPENCV) -> None:
        super().__init__()
        if kernel not in kernels.BICUBIC_KERNELS:
            raise ValueError(f"bicubic kernel {kernel!r}: expected one of {', '.join(kernels.BICUBIC_KERNELS)}")
        self.scale, self.kernel = scale, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == kernels.MATLAB:
            n, c, h, w = x.shape
            # [-1,1] -> the uint8 levels of the LR image, exact integers: MATLAB's sums then hit its .5 ties exactly
            levels = np.round((x.detach().cpu().double().numpy() + 1.0) * 127.5)
            out = kernels.matlab_resize(levels, (n, c, h * self.scale, w * self.scale), quantize=True)
            return torch.from_numpy(out / 127.5 - 1.0).to(x.device, x.dtype)
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def save_generator(generator: Generator, arch: dict, path: Path) -> None:
    """Write generator.pt ({"arch": kwargs, "state_dict"}) atomically."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"arch": dict(arch), "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()}}, tmp)
    tmp.replace(path)


def load_sr_model(strategy_dir: Path, bicubic_kernel: str | None = None) -> nn.Module:
    """The eval-mode SR model of a strategy folder: LR in [-1,1] (N,3,h,w) -> SR (N,3,h*s,w*s).

    The untrained baseline upscales with `bicubic_kernel`, by default the one matching the
    crop.downscale its folder was made under (pipeline.data.kernels.bicubic_kernel).
    """
    strategy_dir = Path(strategy_dir)
    config_path = strategy_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{config_path}: no trained model here; run the train stage for this dataset first")
    config = json.loads(config_path.read_text())
    if config.get("untrained"):
        kernel = bicubic_kernel or kernels.bicubic_kernel((config.get("crop") or {}).get("downscale", "bicubic"))
        return Bicubic(int(config["scale"]), kernel).eval()
    weights = strategy_dir / "generator.pt"
    if not weights.is_file():
        raise UserError(f"{weights}: missing generator weights; rerun the train stage for this dataset")
    saved = torch.load(weights, map_location="cpu", weights_only=True)  # tensors only: no code runs
    generator = Generator(**saved["arch"])
    generator.load_state_dict(saved["state_dict"])
    return generator.eval()
