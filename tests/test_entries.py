"""Behaviour tests of the registry entries added as "one entry plus one test" (pipeline/nets/strategies.py).

The other source documents' losses on tiny networks and seeded random ImageNet backbones built
through the registry (pipeline.training.train.backbone_modules, pipeline.nets.weights.random_weights): each test
recomputes the loss from torchvision's own networks, so a wrong layer, distance, scale, weight or
term fails it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision

from pipeline.config import load_params
from pipeline.nets import strategies, weights
from pipeline.training.train import Trainer, backbone_modules

REPO = Path(__file__).resolve().parents[1]
HR, SCALE = 16, 4
MEAN, STD = torch.tensor(weights.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(weights.IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Reproducible CPU sums (conftest.one_torch_thread)."""


def tiny_train(**over) -> dict:
    train = load_params(REPO / "params.yaml")["train"]
    train.update({"batch_size": 2, "device": "cpu", "seed": 0, "fast": "off",
                  "generator": {"blocks": 2, "width": 8, "upsample": "pixelshuffle"},
                  "discriminator": {"blocks": 2, "width": 8, "dense": 16, "head": "patch", "plain_blocks": 1}})
    train.update(over)
    return train


def trainer_for(name: str, **over) -> Trainer:
    """The entry's trainer with seeded random weights for each backbone it declares."""
    strategy, train = strategies.get(name), tiny_train(**over)
    random = {network: weights.random_weights(network, seed=1) for network in strategy.backbones}
    return Trainer(strategy, train, HR, SCALE, torch.device("cpu"), backbone_modules(strategy, train, random))


def smooth_batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = F.interpolate(torch.rand(n, 3, 2, 2, generator=g) * 2 - 1, size=(HR, HR), mode="bilinear",
                       align_corners=False)
    return F.interpolate(hr, scale_factor=1 / SCALE, mode="area"), hr


def torchvision_vgg19(end: int) -> torch.nn.Module:
    """torchvision's VGG19 `features[:end]` with the same random weights as the trainer's backbone."""
    state, _ = weights.random_weights("vgg19", seed=1)
    net = torchvision.models.vgg19(weights=None).features
    net.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    return net[:end].eval()


def imagenet(x: torch.Tensor) -> torch.Tensor:
    """[-1,1] RGB -> torchvision's input convention (the random weights' record says torchvision)."""
    return ((x + 1) / 2 - MEAN) / STD


def phi22_content(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """SRGAN's VGG22 content loss, written out: MSE of torchvision VGG19 phi_2,2 features / 12.75."""
    phi22 = torchvision_vgg19(9)
    return F.mse_loss(phi22(imagenet(sr)) / 12.75, phi22(imagenet(hr)) / 12.75)


def test_srresnet_vgg22_is_the_mse_of_rescaled_vgg19_phi22():
    """SRResNet-VGG22 (SRGAN 3.4): MSE of VGG19 phi_2,2 (conv2_2 after its ReLU, torchvision's
    features[:9]) / 12.75, no adversarial term and no discriminator, whatever train.lambda2 says."""
    trainer = trainer_for("srresnet-vgg22", lambda2=0.5)
    lr, hr = smooth_batch()
    with torch.no_grad():
        sr, losses = trainer.generator_losses(lr, hr)
        expected = phi22_content(sr, hr)
    torch.testing.assert_close(losses["loss_content"], expected, rtol=1e-4, atol=0)
    assert set(losses) == {"loss_content", "loss_g"} and torch.equal(losses["loss_g"], losses["loss_content"])
    assert trainer.extractor is None and trainer.lambda2 == 0.0


def test_srgan_vgg22_adds_a_fixed_1e3_adversarial_term_to_phi22():
    """SRGAN-VGG22 (SRGAN 3.4, Eq. 3): phi_2,2 MSE / 12.75 + 1e-3 * -log D(F(x)), SRGAN's fixed weight
    whatever train.lambda2 says; the discriminator is trained alongside (it is not Phi)."""
    trainer = trainer_for("srgan-vgg22", lambda2=0.5)
    lr, hr = smooth_batch()
    with torch.no_grad():
        sr, losses = trainer.generator_losses(lr, hr)
        content = phi22_content(sr, hr)
        adversarial = -torch.log(torch.sigmoid(trainer.extractor.logits(sr))).mean()
    torch.testing.assert_close(losses["loss_content"], content, rtol=1e-4, atol=0)
    torch.testing.assert_close(losses["loss_adv"], adversarial, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["loss_g"], content + 1e-3 * adversarial, rtol=1e-5, atol=0)
    discriminator = {k: v.clone() for k, v in trainer.extractor.state_dict().items()}
    trainer.step_main(lr, hr)
    assert any(not torch.equal(v, trainer.extractor.state_dict()[k]) for k, v in discriminator.items())


def torchvision_resnet50(stage: int) -> torch.nn.Module:
    """torchvision's ResNet-50 up to the output of `stage`, with the trainer's random weights, eval mode."""
    state, _ = weights.random_weights("resnet50", seed=1)
    net = torchvision.models.resnet50(weights=None)
    net.load_state_dict(state)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4][:stage]
    return torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *stages).eval()


def test_dp_weights_the_resnet_term_dynamically():
    """SRGAN-DP (DP paper Eq. 4-9): L1 of VGG19 conv5_4 before its ReLU + w * L1 of a ResNet-50 stage output,
    w = k * sg(L_VGG) / (sg(L_ResNet) + eps) from train.dp: the weighted ResNet term equals k * L_VGG in
    value, and no gradient flows through w (the content gradient is that of L_VGG + w * L_ResNet with w a
    constant); plus SRGAN's 1e-3 adversarial term."""
    k = 0.7
    trainer = trainer_for("dp", dp={"k": k, "resnet_stage": 2}, lambda2=0.5)
    lr, hr = smooth_batch()
    sr, losses = trainer.generator_losses(lr, hr)
    vgg54, resnet = torchvision_vgg19(35), torchvision_resnet50(2)
    with torch.no_grad():
        l_vgg = F.l1_loss(vgg54(imagenet(sr)), vgg54(imagenet(hr)))
        l_resnet = F.l1_loss(resnet(imagenet(sr)), resnet(imagenet(hr)))
        adversarial = F.softplus(-trainer.extractor.logits(sr)).mean()
    torch.testing.assert_close(losses["loss_vgg19"], l_vgg, rtol=1e-4, atol=0)
    torch.testing.assert_close(losses["loss_resnet50"], l_resnet, rtol=1e-4, atol=0)
    assert float(l_resnet / l_vgg) > 2 or float(l_resnet / l_vgg) < 0.5   # unbalanced: the weight matters
    # the value: the weighted ResNet term is k times the VGG term, whatever their magnitudes
    torch.testing.assert_close(losses["loss_content"], (1 + k) * losses["loss_vgg19"], rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["loss_g"], losses["loss_content"] + 1e-3 * adversarial, rtol=1e-5, atol=0)
    # the gradient: d(L_VGG)/d sr + w * d(L_ResNet)/d sr, w held constant
    (grad_dp,) = torch.autograd.grad(losses["loss_content"], sr, retain_graph=True)
    terms = trainer.content_terms(sr, hr)
    (grad_vgg,) = torch.autograd.grad(terms["vgg19"], sr, retain_graph=True)
    (grad_resnet,) = torch.autograd.grad(terms["resnet50"], sr)
    w = k * float(terms["vgg19"].detach()) / float(terms["resnet50"].detach())
    torch.testing.assert_close(grad_dp, grad_vgg + w * grad_resnet, rtol=1e-4, atol=1e-12)


# ---------------------------------------------------------------- every entry, whatever it is

def test_every_entry_trains_two_steps_and_is_a_row_of_table_5(tmp_path):
    """Each registry entry trains through the training loop (its phases, tiny networks, seeded random
    backbones for the weights it declares) for two main iterations, and Table 5 built by
    pipeline.reporting.tables holds a row for it: a new entry cannot silently drop out of training or the tables."""
    from pipeline.data import imageset
    from pipeline.nets.networks import load_sr_model
    from pipeline.reporting import tables
    from pipeline.training.train import train_strategy

    params = load_params(REPO / "params.yaml")
    params["crop"].update({"hr_size": HR, "scale": SCALE})
    params["train"] = tiny_train(iterations=2, rec_pretrain=2, pretrain_mse=1, checkpoint_every=100)
    lr, hr = smooth_batch(n=4, seed=5)
    data = (imageset.from_unit(lr), imageset.from_unit(hr))
    metrics = {}
    for name in strategies.NAMES:
        strategy = strategies.get(name)
        random = {network: weights.random_weights(network, seed=1) for network in strategy.backbones}
        folder = train_strategy(params, "tiny", name, tmp_path / strategies.slug(name), data, "m", random)
        config = json.loads((folder / "config.json").read_text())
        assert config["completed"] and config["definition"] == strategy.definition()
        if strategy.trains_generator:
            log = pd.read_csv(folder / "log.csv")
            assert list(log["iteration"]) == [1, 2] and np.isfinite(log.drop(columns="iteration").to_numpy()).all()
            assert [w["network"] for w in config.get("weights", [])] == list(strategy.backbones)
        with torch.no_grad():
            sr = load_sr_model(folder)(imageset.to_unit(data[0]))
        metrics[name] = {"l2": float(((sr - hr) ** 2).mean())}
    params["datasets"] = ["tiny"]
    built = tables.build_tables(params, {"tiny": {"strategies": metrics}}, tables.load_paper())
    table5 = next(t for t in built if t.number == 5)
    assert [row.strategy for row in table5.blocks[0].rows] == list(tables.ALL_METHODS)
    assert set(tables.ALL_METHODS) == set(strategies.NAMES)
    table2 = next(t for t in built if t.number == 2)     # the GCN tables stay the paper's
    assert [row.strategy for row in table2.blocks[0].rows] == ["dis", "rec", "dis,rec", "adv", "adv,rec"]
