"""The perceptual error PE (GCN paper 4.2, Eq. 5-6) on six networks, with the `lpips` package.

Columns, for each trunk net in (squeeze, alex, vgg):

- ``pe_<net>_lin`` (the paper's Squ-l, Alex-l, VGG-l): calibrated LPIPS v0.1,
  ``lpips.LPIPS(net, lpips=True, version='0.1')``, whose linear layers ship inside the lpips
  wheel;
- ``pe_<net>`` (the paper's Squ, Alex, VGG): the uncalibrated distance,
  ``lpips.LPIPS(net, lpips=False) / 2``. For unit-normalised features f, g,
  ||f - g||^2 / 2 = 1 - cos(f, g), so this is the 2018 code's 'net' distance the paper reported:
  the sum over layers of the spatial mean of 1 - cos.

Inputs are RGB in [-1,1] (lpips' convention). The trunk's ImageNet weights come from
pipeline.nets.weights (never from lpips' own download, never random: the model is built with
``pnet_rand=True`` and then every trunk tensor is overwritten by the resolved weights, and a
missing tensor is an error). Both columns of a net share one trunk pass, and the reference
images' features can be computed once and reused for every strategy (`features`, `distances`);
the arithmetic is that of ``LPIPS.forward`` (checked against it in the tests).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import lpips
import torch
from torch import nn

from pipeline.nets import weights as weights_mod

NETS = ("squeeze", "alex", "vgg")
BACKBONES = weights_mod.EVAL_BACKBONES               # squeeze -> squeezenet1_1, alex -> alexnet, vgg -> vgg16


def columns(net: str) -> tuple[str, str]:
    """(raw column, calibrated column) of a trunk net, e.g. ("pe_alex", "pe_alex_lin")."""
    return f"pe_{net}", f"pe_{net}_lin"


ALL_COLUMNS = tuple(c for net in NETS for c in columns(net))


def build_lpips(net: str, state_dict: dict, calibrated: bool = True) -> lpips.LPIPS:
    """An lpips.LPIPS model (v0.1) whose trunk holds `state_dict` (torchvision `features.*` layout).

    lpips' pretrained_networks slices keep torchvision's module indices, so
    ``net.sliceK.<idx>.<rest>`` is loaded from ``features.<idx>.<rest>``.
    """
    with contextlib.redirect_stdout(io.StringIO()), _quiet_torchvision():
        model = lpips.LPIPS(net=net, lpips=calibrated, version="0.1", pretrained=True,
                            pnet_rand=True, verbose=False)
    state = model.state_dict()
    trunk_keys = [k for k in state if k.startswith("net.")]
    for key in trunk_keys:
        source = "features." + re.sub(r"^net\.slice\d+\.", "", key)
        if source not in state_dict:
            raise KeyError(f"{net}: backbone weights lack {source}")
        if state_dict[source].shape != state[key].shape:
            raise ValueError(f"{net}: {source} has shape {tuple(state_dict[source].shape)}, "
                             f"expected {tuple(state[key].shape)}")
        state[key] = state_dict[source]
    model.load_state_dict(state)
    return model.eval()


@contextlib.contextmanager
def _quiet_torchvision():
    import warnings
    with warnings.catch_warnings():
        # lpips builds the trunk with torchvision's deprecated `pretrained=False` argument
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        yield


class PerceptualNet(nn.Module):
    """One trunk net giving both its raw and its calibrated perceptual error."""

    def __init__(self, net: str, state_dict: dict):
        super().__init__()
        self.name = net
        self.model = build_lpips(net, state_dict, calibrated=True)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised trunk features of images in [-1,1] (N,3,H,W), one tensor per layer."""
        outs = self.model.net(self.model.scaling_layer(images))
        return [lpips.normalize_tensor(o) for o in outs]

    @torch.no_grad()
    def distances(self, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw, calibrated) distances, each (N,), from two lists of normalised features."""
        raw, calibrated = 0, 0
        for kk, (f0, f1) in enumerate(zip(feats0, feats1)):
            diff = (f0 - f1) ** 2
            calibrated = calibrated + lpips.spatial_average(self.model.lins[kk](diff), keepdim=True)
            raw = raw + lpips.spatial_average(diff.sum(dim=1, keepdim=True), keepdim=True)
        return (raw / 2).flatten(), calibrated.flatten()

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.distances(self.features(in0), self.features(in1))


def load_networks(nets: list[str] | tuple[str, ...], order: list[str] | tuple[str, ...],
                  root: Path = Path("."), device: torch.device | str = "cpu"
                  ) -> tuple[dict[str, PerceptualNet], dict[str, dict]]:
    """The available perceptual nets and a status record for every requested one.

    Status: {"available": bool, "source", "sha256", "reason" (when unavailable)}. A net whose
    ImageNet weights cannot be obtained is absent from the first dict: its columns are n/a.
    """
    loaded, status = {}, {}
    for net in nets:
        try:
            state, record = weights_mod.resolve(BACKBONES[net], order, root)
            if record.get("input_convention") != weights_mod.TORCHVISION_CONVENTION:
                raise weights_mod.WeightsUnavailable(
                    f"{BACKBONES[net]} weights from {record.get('source')} use the "
                    f"{record.get('input_convention')} input convention; LPIPS needs torchvision's")
        except weights_mod.WeightsUnavailable as err:
            status[net] = {"available": False, "reason": str(err), "source": None, "sha256": None}
            continue
        loaded[net] = PerceptualNet(net, state).to(device)
        status[net] = {"available": True, "source": record["source"], "sha256": record["sha256"]}
    return loaded, status
