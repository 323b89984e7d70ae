"""The strategy registry and the `strategy` parameter's parser."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.nets import strategies


def test_select_all_one_alias_and_list():
    assert strategies.select("all") == list(strategies.NAMES)
    # the GCN paper's experiment: its variants and baselines, and ours (bicubic, ran, cla)
    assert set(strategies.select("gcn")) == {"bicubic", "mse", "adv,mse", "ran", "rec", "cla", "srgan", "dis",
                                             "dis,rec", "adv", "adv,rec"}
    assert strategies.select("dis,rec") == ["dis,rec"]
    assert strategies.select("dis+rec") == ["dis,rec"]
    assert strategies.select(["dis", "rec", "dis"]) == ["dis", "rec"]
    assert strategies.select(["adv+rec", "srgan"]) == ["adv,rec", "srgan"]


@pytest.mark.parametrize("value", ["foo", ["dis", "nope"], [], "dis,foo"])
def test_select_rejects_unknown_listing_valid_names(value):
    with pytest.raises(ConfigError) as err:
        strategies.select(value)
    for name in strategies.NAMES:
        assert name in str(err.value)


def test_slug_and_canonical_round_trip():
    for name in strategies.NAMES:
        assert strategies.canonical(strategies.slug(name)) == name
        assert "," not in strategies.slug(name)
    assert strategies.slug("adv,rec") == "adv+rec"


def test_registry_matches_the_paper():
    assert tuple(strategies.REGISTRY) == strategies.NAMES
    get = strategies.get
    train = {"lambda2": 0.01}
    # lambda2 = 0 for the non-adversarial strategies, train.lambda2 for adv*, SRGAN's fixed 1e-3
    assert {n: get(n).adversarial_weight(train) for n in strategies.group("gcn")} == {
        "bicubic": 0.0, "mse": 0.0, "adv,mse": 0.01, "ran": 0.0, "rec": 0.0, "cla": 0.0, "srgan": 1e-3,
        "dis": 0.0, "dis,rec": 0.0, "adv": 0.01, "adv,rec": 0.01}
    assert get("dis").extractor == get("adv").extractor == "discriminator"
    assert get("dis,rec").extractor == get("adv,rec").extractor == "discriminator+decoder"
    assert {n for n in strategies.NAMES if get(n).learning == "joint"} == {"dis", "dis,rec", "adv", "adv,rec"}
    assert (get("rec").extractor, get("rec").learning) == ("autoencoder", "disjoint")
    assert (get("ran").extractor, get("ran").learning) == ("random", "frozen")
    assert {n for n in strategies.group("gcn") if "vgg19" in get(n).backbones} == {"cla", "srgan"}
    assert get("srgan").terms[0].scale == get("cla").terms[0].scale == pytest.approx(1 / 12.75)
    assert get("srgan").terms[0].layer == get("cla").terms[0].layer == "relu5_4"   # SRGAN's phi_5,4
    assert [n for n in strategies.NAMES if not get(n).trains_generator] == ["bicubic"]
    assert get("mse").extractor == get("adv,mse").extractor == "identity"
    assert all(s.description for s in strategies.REGISTRY.values())
    with pytest.raises(ConfigError):
        get("bogus")


def test_select_text_reads_the_command_line_forms():
    assert strategies.select_text("dis+rec") == ["dis,rec"]
    assert strategies.select_text(" [dis, rec] ") == ["dis", "rec"]
    assert strategies.select_text("all") == list(strategies.NAMES)
    with pytest.raises(ConfigError, match="not a valid list"):
        strategies.select_text("[dis, rec")


def test_inconsistent_entries_are_refused():
    """An entry whose parts disagree cannot be built: the registry never holds one the trainer would misread."""
    import dataclasses

    dp, ran = strategies.get("dp"), strategies.get("ran")
    for base, change, words in (
            (dp, {"backbones": ("vgg19",)}, "backbones"),                       # a term's backbone not declared
            (dp, {"terms": dp.terms[1:], "backbones": ("resnet50",)}, "dynamic"),  # no reference for the weight
            (dp, {"extractor": "identity", "learning": "none"}, "disagree"),     # Phi is not the backbones
            (ran, {"terms": ran.terms + (strategies.adversarial(1e-3),)}, "fixed Phi"),  # D would move Phi
            (ran, {"terms": ran.terms * 2}, "one feature space")):
        with pytest.raises(ValueError, match=words):
            dataclasses.replace(base, **change)
