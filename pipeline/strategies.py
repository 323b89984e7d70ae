"""The registry of strategies: ways of obtaining the feature extractor Phi (GCN paper, section 3).

PLACEHOLDER registry (names only) written by the foundation; the strategies issue fills each
entry with its definition. `select` is the single parser of the `strategy` parameter.
"""

from __future__ import annotations

from pipeline.errors import ConfigError

NAMES = ("bicubic", "mse", "adv,mse", "ran", "rec", "cla", "srgan", "dis", "dis,rec", "adv", "adv,rec")


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
