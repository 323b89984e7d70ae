"""The registry of strategies: ways of obtaining the feature extractor Phi (GCN paper, section 3).

Every strategy trains the same generator F with the GCN loss (paper Eq. 1)

    lambda1 * mean((Phi(y) - Phi(F(x)))^2) + lambda2 * adversarial(F(x))

and differs only in what Phi is and how it is learned. Each entry below is one `Strategy`;
adding a strategy is one entry here (plus its test), the trainer reads nothing else.

Vocabulary of the fields:

- `extractor`: what Phi is. `identity` (pixel space), `random` (first blocks of a randomly
  initialised extractor network), `autoencoder` (first blocks of an auto-encoder's encoder),
  `vgg19` (ImageNet VGG19 phi_5,4), `discriminator` (first blocks of the discriminator),
  `discriminator+decoder` (first blocks of an encoder shared by a discriminator head and a
  decoder head).
- `learning`: how Phi's weights are obtained. `none` (no weights), `frozen` (given, never
  trained here), `disjoint` (trained beforehand on its own problem, then frozen, Eq. 2),
  `joint` (updated alternately with the generator, Eq. 4).
- `lambda2`: the weight of the adversarial term. `0.0` = no adversarial term, `None` = the
  `train.lambda2` parameter, a number = fixed by the paper that defines the strategy.
- `feature_scale`: features are multiplied by this before the squared error (SRGAN rescales
  VGG feature maps by 1/12.75).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.errors import ConfigError

EXTRACTORS = ("identity", "random", "autoencoder", "vgg19", "discriminator", "discriminator+decoder")
LEARNINGS = ("none", "frozen", "disjoint", "joint")


@dataclass(frozen=True)
class Strategy:
    """One way of training the generator (one row of the paper's Table 1, or a baseline)."""

    name: str                  # the paper's notation, e.g. "adv,rec" for P_sisr/adv,rec
    description: str           # what it is and where it is defined
    extractor: str             # one of EXTRACTORS
    learning: str              # one of LEARNINGS
    lambda2: float | None      # adversarial weight: 0.0 none, None = train.lambda2, number = fixed
    trains_generator: bool = True
    needs_vgg19: bool = False
    feature_scale: float = 1.0

    def __post_init__(self) -> None:
        assert self.extractor in EXTRACTORS, self.extractor
        assert self.learning in LEARNINGS, self.learning

    @property
    def adversarial(self) -> bool:
        """Whether the generator loss has an adversarial term (when lambda2 is configured > 0)."""
        return self.lambda2 is None or self.lambda2 > 0

    @property
    def needs_discriminator(self) -> bool:
        """Whether a discriminator is trained alongside the generator."""
        return self.trains_generator and (self.adversarial or self.extractor.startswith("discriminator"))

    @property
    def needs_decoder(self) -> bool:
        """Whether the extractor network has a reconstruction (decoder) head."""
        return self.extractor in ("autoencoder", "discriminator+decoder")

    def adversarial_weight(self, train: dict) -> float:
        """lambda2 for this strategy under the `train` parameters."""
        return float(train["lambda2"]) if self.lambda2 is None else float(self.lambda2)

    def definition(self) -> dict:
        """Every field, for the inputs hash and config.json."""
        return asdict(self)


REGISTRY: dict[str, Strategy] = {s.name: s for s in (
    Strategy("bicubic", "Bicubic interpolation, the untrained baseline (no generator).",
             extractor="identity", learning="none", lambda2=0.0, trains_generator=False),
    Strategy("mse", "P/mse, GCN paper 3.1 case (1.a): Phi = identity, the pixel-wise MSE loss (SRResNet-MSE).",
             extractor="identity", learning="none", lambda2=0.0),
    Strategy("adv,mse", "P/adv,mse, GCN paper 3.2 and Table 1: pixel MSE plus the adversarial term of Eq. 4.",
             extractor="identity", learning="none", lambda2=None),
    Strategy("ran", "P/ran, GCN paper 3.1 case (1.b): Phi = first blocks of a randomly initialised "
             "(seeded) extractor network, frozen.",
             extractor="random", learning="frozen", lambda2=0.0),
    Strategy("rec", "P/rec, GCN paper 3.1 case (1.c), Eq. 2: Phi = first blocks of an auto-encoder trained "
             "beforehand to reconstruct HR images (train.rec_pretrain iterations), then frozen (disjoint learning).",
             extractor="autoencoder", learning="disjoint", lambda2=0.0),
    Strategy("cla", "P/cla, GCN paper 3.1 case (1.d), Eq. 3: Phi = ImageNet-trained VGG19 phi_5,4 "
             "(features rescaled by 1/12.75 as in SRGAN 2.2.1), no adversarial term (SRResNet-VGG54).",
             extractor="vgg19", learning="frozen", lambda2=0.0, needs_vgg19=True, feature_scale=1 / 12.75),
    Strategy("srgan", "P/adv,cla = SRGAN (Ledig et al., 2.2, Eq. 3): VGG19 phi_5,4 content loss with features "
             "rescaled by 1/12.75 plus 1e-3 times the adversarial loss.",
             extractor="vgg19", learning="frozen", lambda2=1e-3, needs_vgg19=True, feature_scale=1 / 12.75),
    Strategy("dis", "P/dis, GCN paper 3.1 case (2.a) with lambda2 = 0: Phi = first blocks of the discriminator, "
             "learned jointly on the adversarial problem of Eq. 4; the generator sees only the feature loss.",
             extractor="discriminator", learning="joint", lambda2=0.0),
    Strategy("dis,rec", "P/dis,rec, GCN paper 3.1 case (2.b) with lambda2 = 0: Phi = first blocks of an encoder "
             "shared by a discriminator head and a decoder head, learned jointly on Eq. 4 and Eq. 2.",
             extractor="discriminator+decoder", learning="joint", lambda2=0.0),
    Strategy("adv", "P/adv, GCN paper 3.1 case (2.a): as dis, plus lambda2 (train.lambda2) times the "
             "adversarial term.",
             extractor="discriminator", learning="joint", lambda2=None),
    Strategy("adv,rec", "P/adv,rec, GCN paper 3.1 case (2.b), the paper's selected method: as dis,rec, plus "
             "lambda2 (train.lambda2) times the adversarial term.",
             extractor="discriminator+decoder", learning="joint", lambda2=None),
)}

NAMES = ("bicubic", "mse", "adv,mse", "ran", "rec", "cla", "srgan", "dis", "dis,rec", "adv", "adv,rec")
assert tuple(REGISTRY) == NAMES


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
    """Resolve the `strategy` parameter (`all`, one name or alias, or a list) to registry names."""
    if value == "all":
        return list(NAMES)
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"strategy: empty list; valid choices: all, {', '.join(NAMES)}")
    selected: list[str] = []
    for item in items:
        name = canonical(item)
        if name not in NAMES:
            raise ConfigError(f"strategy: unknown strategy {item!r}; valid choices: all, {', '.join(NAMES)} "
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
