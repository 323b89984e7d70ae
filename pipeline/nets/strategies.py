"""The registry of strategies: one entry per way of training the generator, holding its whole behaviour.

The GCN paper (section 3) trains the same generator F with the loss (paper Eq. 1)

    lambda1 * content + lambda2 * adversarial(F(x)),   content = d(Phi(F(x)), Phi(y))

and its strategies differ in what Phi is and how it is learned. The other source documents'
systems fit the same form with other content terms (SRGAN's VGG22, the DP loss's two backbones).
Each `Strategy` entry declares everything the pipeline does with it, in the BasicSR / pyiqa way
(one entry holds how to build it and its metadata):

- `terms`: the generator's loss terms (`Term`). Content terms are `mse` or `l1` distances in a
  feature space: `pixel`, `extractor` (the first `train.feature_layer` blocks of the GCN extractor
  network) or an ImageNet backbone layer (`vgg19` `relu5_4` = SRGAN's phi_5,4, `conv5_4` = the
  same before its ReLU, `relu2_2` = phi_2,2; `resnet50` `layer1`-`layer4` = the output of a
  stage's last bottleneck). Their weighted sum is the content loss. The `gan` term is the
  adversarial term (SRGAN Eq. 6, non-saturating), weighted by a number or `train.lambda2`.
- `backbones`: the ImageNet networks the terms use (pipeline.nets.weights resolves them, never random).
- `extractor` and `learning`: what Phi is (the GCN paper's cases) and how its weights are
  obtained. The trainer reads `learning`: `none` (no Phi network), `frozen` (never trained here),
  `disjoint` (trained beforehand on its own problem, `train.rec_pretrain` iterations, then frozen,
  Eq. 2), `joint` (updated alternately with the generator, Eq. 4). A discriminator needed only for
  the adversarial term is always trained jointly.
- `generator`: `srresnet` (SRGAN Fig. 4), or None for the untrained bicubic baseline.
- `role`: where the tables put it: `gcn` (the paper's Table 2), `baseline` (Tables 3-4), `extra`
  (ours or other documents': Table 5 only). `label` is its name in tables and figures.
- `experiment`: the source document whose experiment it belongs to; `strategy: gcn` selects the
  GCN paper's (the default), `all` every entry.

Adding a strategy is one entry here plus its behaviour test; tables, report, bench, deviations,
the weights stage and the inputs hash read everything from the entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.errors import ConfigError

BACKBONES = ("vgg19", "resnet50")                     # ImageNet networks a loss term can use
SPACES = ("pixel", "extractor") + BACKBONES           # where a content distance is taken
CONTENT_LOSSES = ("mse", "l1")
ADVERSARIAL_LOSSES = ("gan",)                         # -log D(F(x)) (SRGAN Eq. 6); RaGAN is not built
EXTRACTORS = ("identity", "random", "autoencoder", "imagenet", "discriminator", "discriminator+decoder")
LEARNINGS = ("none", "frozen", "disjoint", "joint")
# Phi's possible learning per extractor: a network needs a head to learn from (the auto-encoder's
# decoder, the discriminator's head), and a shared discriminator is necessarily learned jointly.
LEARNINGS_OF = {"identity": ("none",), "random": ("frozen",), "imagenet": ("frozen",),
                "autoencoder": ("disjoint", "joint"), "discriminator": ("joint",),
                "discriminator+decoder": ("joint",)}
GENERATORS = ("srresnet",)
ROLES = ("gcn", "baseline", "extra")
EXPERIMENTS = ("gcn", "srgan", "dp")
GROUPS = ("all", "gcn")                               # `strategy` values naming several entries

DYNAMIC = "dynamic"               # a content term weighted as train.dp.k * sg(first term) / (sg(this) + eps)
DYNAMIC_EPS = 1e-8                # keeps the dynamic weight's denominator from being zero (DP Eq. 9)
RESNET_STAGE = "train.dp.resnet_stage"   # a resnet50 layer given by this parameter (layer1 .. layer4)
TRAIN_DEFAULTS = {"lambda2": 0.001, "dp": {"k": 0.5, "resnet_stage": 3}}


def train_value(train: dict, reference: str) -> object:
    """The value of a `train.<key>[.<key>]` reference in the train parameters (TRAIN_DEFAULTS when absent)."""
    value: object = train
    default: object = TRAIN_DEFAULTS
    for key in reference.removeprefix("train.").split("."):
        default = default.get(key) if isinstance(default, dict) else None
        value = value.get(key, default) if isinstance(value, dict) else default
    return value


@dataclass(frozen=True)
class Term:
    """One term of the generator's loss: a content distance in one feature space, or the adversarial term."""

    loss: str                       # mse | l1 (content) or gan (adversarial)
    space: str = "pixel"            # one of SPACES; "discriminator" for the adversarial term
    layer: str | None = None        # backbone layer (relu5_4, conv5_4, relu2_2, layer3) or RESNET_STAGE
    scale: float = 1.0              # features are multiplied by this before the distance (SRGAN's 1/12.75)
    weight: float | str = 1.0       # a number, "train.lambda2", or DYNAMIC

    @property
    def adversarial(self) -> bool:
        return self.loss in ADVERSARIAL_LOSSES

    def layer_name(self, train: dict) -> str | None:
        """The backbone layer under the `train` parameters (`layer3` for train.dp.resnet_stage 3)."""
        if self.layer == RESNET_STAGE:
            return f"layer{int(train_value(train, RESNET_STAGE))}"
        return self.layer

    def key(self, train: dict) -> str:
        """The feature extractor this term reads, e.g. `vgg19/relu5_4`, `resnet50/layer3`, `pixel`."""
        return self.space if self.space not in BACKBONES else f"{self.space}/{self.layer_name(train)}"

    def reads(self) -> set[str]:
        """The train parameters (top-level keys) this term's value depends on."""
        keys = set()
        if isinstance(self.weight, str) and self.weight.startswith("train."):
            keys.add(self.weight.removeprefix("train.").split(".")[0])
        if self.weight == DYNAMIC or self.layer == RESNET_STAGE:
            keys.add("dp")
        return keys


def pixel(loss: str = "mse") -> Term:
    """A distance between the images themselves (Phi = identity)."""
    return Term(loss)


def features(space: str, loss: str = "mse", layer: str | None = None, scale: float = 1.0,
             weight: float | str = 1.0) -> Term:
    """A distance between the features of F(x) and y in `space` (the extractor network or a backbone)."""
    return Term(loss, space, layer, scale, weight)


def adversarial(weight: float | str) -> Term:
    """The adversarial term, weighted by a number or `train.lambda2`."""
    return Term("gan", "discriminator", weight=weight)


@dataclass(frozen=True)
class Strategy:
    """One way of training the generator (one row of the paper's Table 1, a baseline, or another paper's loss)."""

    name: str                  # the paper's notation, e.g. "adv,rec" for P_sisr/adv,rec
    description: str           # what it is and where it is defined
    label: str                 # its name in tables and figures
    role: str                  # one of ROLES
    extractor: str             # one of EXTRACTORS: what Phi is
    learning: str              # one of LEARNINGS: how Phi's weights are obtained (the trainer reads it)
    terms: tuple[Term, ...] = ()
    backbones: tuple[str, ...] = ()
    generator: str | None = "srresnet"
    experiment: str = "gcn"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"strategy {self.name}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is inconsistent in this entry (empty when it can be built)."""
        out = []
        for value, choices, what in ((self.extractor, EXTRACTORS, "extractor"), (self.role, ROLES, "role"),
                                     (self.experiment, EXPERIMENTS, "experiment"),
                                     (self.learning, LEARNINGS, "learning")):
            if value not in choices:
                out.append(f"{what} {value!r} is not one of {', '.join(choices)}")
        if out:
            return out
        if self.learning not in LEARNINGS_OF[self.extractor]:
            out.append(f"a {self.extractor} extractor is learned {' or '.join(LEARNINGS_OF[self.extractor])}, "
                       f"not {self.learning}")
        if self.generator is None:
            return out + (["an untrained baseline has no loss terms"] if self.terms else [])
        if self.generator not in GENERATORS:
            out.append(f"generator {self.generator!r} is not one of {', '.join(GENERATORS)}")
        content = self.content_terms
        if not content:
            out.append("no content term")
        spaces = [t.space for t in content]
        if len(set(spaces)) != len(spaces):
            out.append("two content terms in one feature space")
        for term in self.terms:
            losses = ADVERSARIAL_LOSSES if term.space == "discriminator" else CONTENT_LOSSES
            if term.loss not in losses or term.space not in SPACES + ("discriminator",):
                out.append(f"term {term} is neither a content term in {', '.join(SPACES)} nor an adversarial term")
        if sum(t.adversarial for t in self.terms) > 1:
            out.append("more than one adversarial term")
        if any(isinstance(t.weight, str) and t.weight != DYNAMIC for t in content):
            out.append(f"a content term's weight is a number or {DYNAMIC!r}")
        if content and content[0].weight == DYNAMIC:
            out.append("the first content term is the dynamic weight's reference, it cannot be dynamic")
        uses = {"extractor": "extractor" in spaces, "imagenet": any(s in BACKBONES for s in spaces)}
        if uses["extractor"] != (self.extractor in ("random", "autoencoder", "discriminator", "discriminator+decoder")):
            out.append(f"an {self.extractor} Phi and the content terms' spaces {spaces} disagree")
        if uses["imagenet"] != (self.extractor == "imagenet"):
            out.append(f"an {self.extractor} Phi and the content terms' spaces {spaces} disagree")
        used = tuple(dict.fromkeys(s for s in spaces if s in BACKBONES))
        if used != self.backbones:
            out.append(f"backbones {self.backbones} differ from those its terms use {used}")
        if self.adversarial_term is not None and uses["extractor"] and self.learning != "joint":
            out.append("a discriminator trained for the adversarial term would change a fixed Phi")
        return out

    # -- what the trainer builds

    @property
    def parameters(self) -> tuple[str, ...]:
        """The train parameters (top-level keys) its terms read beyond the common ones, e.g. ("dp",)."""
        return tuple(sorted(set().union(*(t.reads() for t in self.terms))))

    @property
    def trains_generator(self) -> bool:
        """False for the untrained baseline (bicubic)."""
        return self.generator is not None

    @property
    def content_terms(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if not t.adversarial)

    @property
    def adversarial_term(self) -> Term | None:
        return next((t for t in self.terms if t.adversarial), None)

    @property
    def adversarial(self) -> bool:
        """Whether the generator loss has an adversarial term (when its weight is configured > 0)."""
        term = self.adversarial_term
        return term is not None and (isinstance(term.weight, str) or term.weight > 0)

    @property
    def phi_network(self) -> bool:
        """Whether Phi is (the first blocks of) the extractor network built beside the generator."""
        return self.extractor in ("random", "autoencoder", "discriminator", "discriminator+decoder")

    @property
    def needs_discriminator(self) -> bool:
        """Whether a discriminator is trained alongside the generator."""
        return self.trains_generator and (self.adversarial or self.extractor.startswith("discriminator"))

    @property
    def needs_decoder(self) -> bool:
        """Whether the extractor network has a reconstruction (decoder) head."""
        return self.extractor in ("autoencoder", "discriminator+decoder")

    @property
    def needs_extractor(self) -> bool:
        """Whether the extractor network (Phi's network, or the discriminator alone) is built."""
        return self.trains_generator and (self.phi_network or self.needs_discriminator)

    def adversarial_weight(self, train: dict) -> float:
        """lambda2 for this strategy under the `train` parameters (0 without an adversarial term)."""
        term = self.adversarial_term
        if term is None:
            return 0.0
        return float(train_value(train, term.weight)) if isinstance(term.weight, str) else float(term.weight)

    def definition(self) -> dict:
        """The fields that decide the behaviour (for the inputs hash and config.json): no text, no table role."""
        return {"extractor": self.extractor, "learning": self.learning, "generator": self.generator,
                "backbones": list(self.backbones), "terms": [asdict(t) for t in self.terms]}


VGG54 = features("vgg19", layer="relu5_4", scale=1 / 12.75)   # SRGAN 2.2.1 and 3.2: phi_5,4 rescaled by 1/12.75
PHI = features("extractor")                                   # GCN Eq. 1: MSE of the first extractor blocks

REGISTRY: dict[str, Strategy] = {s.name: s for s in (
    Strategy("bicubic", "Bicubic interpolation, the untrained baseline (no generator).",
             "Bicubic", "extra", extractor="identity", learning="none", generator=None),
    Strategy("mse", "P/mse, GCN paper 3.1 case (1.a): Phi = identity, the pixel-wise MSE loss (SRResNet-MSE).",
             "Psisr/mse", "baseline", extractor="identity", learning="none", terms=(pixel(),)),
    Strategy("adv,mse", "P/adv,mse, GCN paper 3.2 and Table 1: pixel MSE plus the adversarial term of Eq. 4.",
             "Psisr/adv,mse", "baseline", extractor="identity", learning="none",
             terms=(pixel(), adversarial("train.lambda2"))),
    Strategy("ran", "P/ran, GCN paper 3.1 case (1.b): Phi = first blocks of a randomly initialised "
             "(seeded) extractor network, frozen.",
             "Psisr/ran", "extra", extractor="random", learning="frozen", terms=(PHI,)),
    Strategy("cla", "P/cla, GCN paper 3.1 case (1.d), Eq. 3: Phi = ImageNet-trained VGG19 phi_5,4 "
             "(features rescaled by 1/12.75 as in SRGAN 2.2.1), no adversarial term (SRResNet-VGG54).",
             "Psisr/cla", "extra", extractor="imagenet", learning="frozen", terms=(VGG54,), backbones=("vgg19",)),
    Strategy("srgan", "P/adv,cla = SRGAN (Ledig et al., 2.2, Eq. 3): VGG19 phi_5,4 content loss with features "
             "rescaled by 1/12.75 plus 1e-3 times the adversarial loss.",
             "SRGAN", "baseline", extractor="imagenet", learning="frozen", terms=(VGG54, adversarial(1e-3)),
             backbones=("vgg19",)),
    Strategy("dis", "P/dis, GCN paper 3.1 case (2.a) with lambda2 = 0: Phi = first blocks of the discriminator, "
             "learned jointly on the adversarial problem of Eq. 4; the generator sees only the feature loss.",
             "Psisr/dis", "gcn", extractor="discriminator", learning="joint", terms=(PHI,)),
    Strategy("rec", "P/rec, GCN paper 3.1 case (1.c), Eq. 2: Phi = first blocks of an auto-encoder trained "
             "beforehand to reconstruct HR images (train.rec_pretrain iterations), then frozen (disjoint learning).",
             "Psisr/rec", "gcn", extractor="autoencoder", learning="disjoint", terms=(PHI,)),
    Strategy("dis,rec", "P/dis,rec, GCN paper 3.1 case (2.b) with lambda2 = 0: Phi = first blocks of an encoder "
             "shared by a discriminator head and a decoder head, learned jointly on Eq. 4 and Eq. 2.",
             "Psisr/dis,rec", "gcn", extractor="discriminator+decoder", learning="joint", terms=(PHI,)),
    Strategy("adv", "P/adv, GCN paper 3.1 case (2.a): as dis, plus lambda2 (train.lambda2) times the "
             "adversarial term.",
             "Psisr/adv", "gcn", extractor="discriminator", learning="joint",
             terms=(PHI, adversarial("train.lambda2"))),
    Strategy("adv,rec", "P/adv,rec, GCN paper 3.1 case (2.b), the paper's selected method: as dis,rec, plus "
             "lambda2 (train.lambda2) times the adversarial term.",
             "Psisr/adv,rec", "gcn", extractor="discriminator+decoder", learning="joint",
             terms=(PHI, adversarial("train.lambda2"))),
    # The other source documents' systems (Table 5 only).
    Strategy("srresnet-vgg22", "SRResNet-VGG22, SRGAN 3.4: the generator trained on the MSE of VGG19 phi_2,2 "
             "features (low-level: conv2_2 after its ReLU), rescaled by 1/12.75 (SRGAN 3.2), no adversarial term.",
             "SRResNet-VGG22", "extra", extractor="imagenet", learning="frozen",
             terms=(features("vgg19", layer="relu2_2", scale=1 / 12.75),), backbones=("vgg19",), experiment="srgan"),
    Strategy("srgan-vgg22", "SRGAN-VGG22, SRGAN 3.4: as srresnet-vgg22 plus 1e-3 times the adversarial loss (Eq. 3).",
             "SRGAN-VGG22", "extra", extractor="imagenet", learning="frozen",
             terms=(features("vgg19", layer="relu2_2", scale=1 / 12.75), adversarial(1e-3)), backbones=("vgg19",),
             experiment="srgan"),
    Strategy("dp", "SRGAN-DP, the Dual Perceptual loss (DP paper 3.2, Eq. 4-9) on SRGAN: the L1 of VGG19 phi_5,4 "
             "before its ReLU (conv5_4, as ESRGAN) plus the L1 of a ResNet-50 stage's output (after its last "
             "bottleneck's ReLU; train.dp.resnet_stage) weighted k * sg(L_VGG) / (sg(L_ResNet) + eps) (train.dp.k), "
             "plus 1e-3 times SRGAN's adversarial term. ImageNet weights of both (torchvision's ResNet-50).",
             "SRGAN-DP", "extra", extractor="imagenet", learning="frozen",
             terms=(features("vgg19", "l1", layer="conv5_4"),
                    features("resnet50", "l1", layer=RESNET_STAGE, weight=DYNAMIC), adversarial(1e-3)),
             backbones=("vgg19", "resnet50"), experiment="dp"),
)}

NAMES = tuple(REGISTRY)


def group(name: str) -> list[str]:
    """The entries a group name selects: `all` every entry, `gcn` the GCN paper's experiment."""
    return [n for n, s in REGISTRY.items() if name == "all" or s.experiment == name]


def with_role(role: str) -> tuple[str, ...]:
    """The entries of a table role (`gcn`, `baseline`, `extra`), in registry order."""
    return tuple(n for n, s in REGISTRY.items() if s.role == role)


def backbones() -> list[str]:
    """Every ImageNet backbone some entry's loss uses (the weights stage resolves them all)."""
    return list(dict.fromkeys(b for s in REGISTRY.values() for b in s.backbones))


def label(name: str) -> str:
    """The name of a strategy in tables and figures (`Psisr/dis,rec`, `SRGAN`); an unknown name as `Psisr/<name>`."""
    entry = REGISTRY.get(name)
    return entry.label if entry is not None else f"Psisr/{name}"


def get(name: str) -> Strategy:
    """The registry entry for a strategy name or alias; ConfigError listing valid names otherwise."""
    return REGISTRY[select(name)[0]]


def slug(name: str) -> str:
    """File-system and wildcard safe form of a strategy name (`dis,rec` -> `dis+rec`)."""
    return name.replace(",", "+")


def canonical(name: str) -> str:
    """The registry name for a user-given name or alias (`dis+rec` -> `dis,rec`)."""
    return str(name).strip().replace("+", ",")


def select(value: object) -> list[str]:
    """Resolve the `strategy` parameter (a group: `all`, `gcn`; one name or alias; or a list) to registry names."""
    if isinstance(value, str) and value in GROUPS:
        return group(value)
    items = value if isinstance(value, list) else [value]
    valid = f"all, {', '.join(NAMES)}, gcn (the GCN paper's strategies)"
    if not items:
        raise ConfigError(f"strategy: empty list; valid choices: {valid}")
    selected: list[str] = []
    for item in items:
        name = canonical(item)
        if name not in NAMES:
            raise ConfigError(f"strategy: unknown strategy {item!r}; valid choices: {valid} "
                              f"(a joint variant may also be written with '+', e.g. dis+rec)")
        if name not in selected:
            selected.append(name)
    return selected


def select_text(text: str) -> list[str]:
    """`select` for a command-line value: `all`, a name or alias, or a YAML list such as `[dis, rec]`."""
    text = text.strip()
    if text.startswith("["):
        import yaml

        try:
            return select(yaml.safe_load(text))
        except yaml.YAMLError:
            raise ConfigError(f"--strategy: {text!r} is not a valid list; write it as [name, name]") from None
    return select(text)
