"""The networks of the GCN paper (4.3.2), which are SRGAN's (Ledig et al., Fig. 4).

- `Generator`: SRResNet, the mapping F from LR to SR images in [-1,1].
- `Extractor`: the discriminator's convolutional encoder with an optional discriminator head
  (two dense layers, sigmoid) and an optional symmetric decoder (the auto-encoder's
  reconstruction head). Phi, the feature extractor of the GCN loss, is always the output of
  the encoder's first `feature_layer` blocks, taken after their activation.
- `Bicubic`: the untrained baseline with the generator's interface.
- `load_sr_model`: the trained (or bicubic) model of one strategy folder, ready to evaluate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError

LEAKY_SLOPE = 0.2  # LeakyReLU alpha of the discriminator (SRGAN 2.1, GCN 4.3.2)


def upsampling_factors(scale: int) -> list[int]:
    """The learned upsampling stages for a scale: x2 stages (SRGAN uses two for x4), or one x3."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise UserError(f"crop.scale: {scale} is not supported by the generator; use 2, 3, 4 or 8")


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity skip (SRGAN Fig. 4)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.PReLU(width),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """SRResNet (SRGAN Fig. 4) with `blocks` residual blocks and a tanh output (GCN 4.3.3).

    `upsample` is `pixelshuffle` (SRGAN's sub-pixel convolution) or `nearest` (nearest-neighbour
    upsampling followed by a convolution, as in the GCN authors' released code).
    """

    def __init__(self, blocks: int = 10, width: int = 64, upsample: str = "pixelshuffle", scale: int = 4) -> None:
        super().__init__()
        if upsample not in ("pixelshuffle", "nearest"):
            raise UserError(f"train.generator.upsample: invalid value {upsample!r}; valid choices: pixelshuffle, nearest")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(3, width, 9, padding=4), nn.PReLU(width))
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.post = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        stages: list[nn.Module] = []
        for factor in upsampling_factors(scale):
            if upsample == "pixelshuffle":
                stages += [nn.Conv2d(width, width * factor ** 2, 3, padding=1), nn.PixelShuffle(factor)]
            else:
                stages += [nn.Upsample(scale_factor=factor, mode="nearest"), nn.Conv2d(width, width, 3, padding=1)]
            stages.append(nn.PReLU(width))
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(width, 3, 9, padding=4)

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

    Encoder: `blocks` conv3x3 blocks (BN except on the first block, LeakyReLU 0.2), widths
    doubling every two blocks from `width`, stride 2 on every second block. Heads:
    `discriminator` adds dense(`dense`) - LeakyReLU - dense(1) - sigmoid on the flattened
    encoder output (its size is computed from `image_size`); `decoder` adds a mirror image of
    the encoder (nearest x2 upsampling where the encoder strides, conv3x3, BN, LeakyReLU) ending
    in a conv to 3 channels and tanh. With both heads the encoder, hence Phi, is shared by the
    two problems (P/dis,rec and P/adv,rec, as in the authors' released code).
    """

    def __init__(self, image_size: int, blocks: int = 8, width: int = 64, dense: int = 1024,
                 discriminator: bool = True, decoder: bool = False) -> None:
        super().__init__()
        reduction = encoder_reduction(blocks)
        if image_size % reduction:
            raise UserError(f"crop.hr_size: {image_size} is not divisible by {reduction}, which the "
                            f"{blocks}-block discriminator needs; use a multiple of {reduction}")
        widths, strides = encoder_widths(blocks, width), encoder_strides(blocks)
        inputs = [3] + widths[:-1]
        self.encoder = nn.ModuleList()
        for i, (c_in, c_out, stride) in enumerate(zip(inputs, widths, strides)):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)]
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
            self.encoder.append(nn.Sequential(*layers))
        self.head = None
        if discriminator:
            side = image_size // reduction
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, dense),
                                      nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(dense, 1))
        self.decoder = None
        if decoder:
            layers = []
            for i in reversed(range(blocks)):
                if strides[i] == 2:
                    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                if i == 0:
                    layers += [nn.Conv2d(widths[0], 3, 3, padding=1), nn.Tanh()]
                else:
                    layers += [nn.Conv2d(widths[i], inputs[i], 3, padding=1), nn.BatchNorm2d(inputs[i]),
                               nn.LeakyReLU(LEAKY_SLOPE)]
            self.decoder = nn.Sequential(*layers)

    def features(self, images: torch.Tensor, layer: int) -> torch.Tensor:
        """Phi: the output of the first `layer` encoder blocks (after their activation)."""
        for block in self.encoder[:layer]:
            images = block(images)
        return images

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images, len(self.encoder))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminator's pre-sigmoid output, (N,); the losses use it for numerical stability."""
        if self.head is None:
            raise RuntimeError("this extractor has no discriminator head")
        return self.head(self.encode(images)).squeeze(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The probability that each image is a real HR image, (N,)."""
        return torch.sigmoid(self.logits(images))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Psi2(Phi(y)): the auto-encoder's reconstruction in [-1,1]."""
        if self.decoder is None:
            raise RuntimeError("this extractor has no decoder head")
        return self.decoder(self.encode(images))


class Bicubic(nn.Module):
    """Bicubic upsampling (align_corners=False, clamped to [-1,1]): the untrained baseline."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def save_generator(generator: Generator, arch: dict, path: Path) -> None:
    """Write generator.pt ({"arch": kwargs, "state_dict"}) atomically."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"arch": dict(arch), "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()}}, tmp)
    tmp.replace(path)


def load_sr_model(strategy_dir: Path) -> nn.Module:
    """The eval-mode SR model of a strategy folder: LR in [-1,1] (N,3,h,w) -> SR (N,3,h*s,w*s)."""
    strategy_dir = Path(strategy_dir)
    config_path = strategy_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{config_path}: no trained model here; run the train stage for this dataset first")
    config = json.loads(config_path.read_text())
    if config.get("untrained"):
        return Bicubic(int(config["scale"])).eval()
    weights = strategy_dir / "generator.pt"
    if not weights.is_file():
        raise UserError(f"{weights}: missing generator weights; rerun the train stage for this dataset")
    saved = torch.load(weights, map_location="cpu", weights_only=True)  # tensors only: no code runs
    generator = Generator(**saved["arch"])
    generator.load_state_dict(saved["state_dict"])
    return generator.eval()
