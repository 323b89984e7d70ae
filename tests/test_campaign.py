"""The CPU campaign (pipeline.campaign): its plan, and toy runs that go into the model zoo as they end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.campaign import command as campaign
from pipeline.errors import ConfigError
from pipeline.lease.plan import Run
from pipeline.training import zoo

from test_lease import REPO, T2, T3, copy_repo

TOY_PROFILE = {
    "datasets": ["sample-texture"],
    "strategy": ["bicubic", "mse", "adv"],
    "data": {"sample-texture": {"crop": {"n_train": 24, "n_test": 4}}},
    "crop": {"hr_size": 24},   # no validation during training: no LPIPS weights to fetch
    "train": {"iterations": 4, "rec_pretrain": 2, "batch_size": 2, "checkpoint_every": 2, "validate_every": 0,
              "seeds": 1, "generator": {"blocks": 1, "width": 8},
              "discriminator": {"blocks": 2, "width": 8, "dense": 16}},
    "eval": {"batch_size": 2},
}
TOY_PLAN = {"profile": "toy-profile.yaml", "datasets": ["sample-texture"], "jobs": 2,
            "runs": [{"seed": 0, "strategies": ["mse", "adv"]}]}


def test_plan_puts_table3_seed0_on_every_dataset_first_then_table2_then_more_seeds():
    plan = campaign.load_campaign(REPO / campaign.PLAN)
    assert plan.datasets == ["kodak24", "dtd10", "sample-aerial"] and plan.jobs == 2
    keys = [(e.dataset, e.run.strategy, e.run.seed) for e in plan.entries]
    assert keys[:12] == [(d, s, 0) for d in plan.datasets for s in T3]
    assert keys[12:24] == [(d, s, 0) for d in plan.datasets for s in T2]
    assert {seed for _, _, seed in keys[24:]} == {1, 2} and len(keys) == 72 == len(set(keys))


def test_plan_rejects_unknown_keys_and_repeated_runs(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({**TOY_PLAN, "deadline": 3}))
    with pytest.raises(ConfigError, match="deadline: unknown key"):
        campaign.load_campaign(path)
    path.write_text(yaml.safe_dump({**TOY_PLAN, "runs": [{"seed": 0, "strategies": ["mse"]}] * 2}))
    with pytest.raises(ConfigError, match="listed twice"):
        campaign.load_campaign(path)


def test_a_plan_with_its_own_zoo_folder_keeps_its_runs_and_status_there(tmp_path):
    plan = campaign.load_campaign(REPO / "configs" / "photo-plan.yaml")
    assert plan.zoo == "photo" and plan.status_file == Path("zoo/photo/PLAN.md")
    assert [(e.dataset, e.zoo_folder, e.run.strategy) for e in plan.entries] == [("kodak24", "photo", "mse")]
    assert campaign.load_campaign(REPO / campaign.PLAN).status_file == Path("zoo/PLAN.md")
    assert {e.zoo_folder for e in campaign.load_campaign(REPO / campaign.PLAN).entries} == {"kodak24", "dtd10",
                                                                                          "sample-aerial"}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({**TOY_PLAN, "datasets": ["sample-texture", "sample-aerial"], "zoo": "mine"}))
    with pytest.raises(ConfigError, match="zoo: a folder name .* for a plan of one dataset"):
        campaign.load_campaign(path)


def _campaign(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.campaign", "--plan", "toy-plan.yaml", *args], cwd=project,
                          capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def toy_campaign(tmp_path_factory):
    """A project copy whose toy campaign (mse and adv, seed 0, on the grey textures) has run once."""
    project = copy_repo(tmp_path_factory.mktemp("campaign"))
    for command in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=project, check=True)   # DVCLive reads the commit
    (project / "toy-profile.yaml").write_text(yaml.safe_dump(TOY_PROFILE))
    (project / "toy-plan.yaml").write_text(yaml.safe_dump(TOY_PLAN))
    result = _campaign(project)
    assert result.returncode == 0, result.stderr[-2000:]
    return project, result


def test_each_finished_run_is_in_the_zoo_in_float16_with_its_provenance(toy_campaign):
    project, _ = toy_campaign
    for slug in ("mse", "adv"):
        folder = zoo.run_folder(project, "sample-texture", slug, 0)
        saved = torch.load(folder / "generator.pt", weights_only=True)
        assert {t.dtype for t in saved["state_dict"].values() if t.is_floating_point()} == {torch.float16}
        config = json.loads((folder / "config.json").read_text())
        assert config["completed"] and config["precision"] in ("fp32", "bf16")
        assert config["campaign"]["cpu"] and config["campaign"]["precision"] == config["precision"]
        assert (folder / "log.csv.gz").is_file()
    rows = [r for r in csv.DictReader((project / "zoo" / "index.csv").open()) if r["dataset"] == "sample-texture"]
    assert sorted(r["strategy"] for r in rows) == ["adv", "mse"] and all(r["precision"] for r in rows)
    assert "2 of 2 runs in the zoo; 0 left" in (project / "zoo" / "PLAN.md").read_text()
    assert (project / "zoo" / "sample-texture" / "SOURCE.json").is_file()   # every image's sha256


def test_models_are_rebuilt_from_the_zoo_copy_so_evaluation_sees_what_a_clone_sees(toy_campaign):
    project, _ = toy_campaign
    for slug in ("mse", "adv"):
        zoo_state = torch.load(zoo.run_folder(project, "sample-texture", slug, 0) / "generator.pt", weights_only=True)
        model_state = torch.load(project / "models" / "sample-texture" / slug / "seed-0" / "generator.pt",
                                 weights_only=True)
        for key, value in zoo_state["state_dict"].items():
            assert torch.equal(model_state["state_dict"][key], value.float()), key


def test_a_second_call_trains_nothing_and_the_profile_selects_what_is_done(toy_campaign):
    project, first = toy_campaign
    assert first.stdout.count("start sample-texture/") == 2
    again = _campaign(project)
    assert again.returncode == 0 and "start " not in again.stdout and "2 of 2 runs in the zoo" in again.stdout
    profile = yaml.safe_load((project / "toy-profile.yaml").read_text())
    assert profile["strategy"] == ["bicubic", "mse", "adv"] and profile["train"]["seeds"] == [0]


def test_the_train_stage_takes_a_zoo_run_with_the_same_inputs_instead_of_training(toy_campaign, tmp_path):
    from pipeline.config import validate
    from pipeline.lease.plan import merge
    from pipeline.training.train import train_dataset

    project, _ = toy_campaign
    models = project / "models" / "sample-texture"
    for slug in ("mse", "adv"):
        (models / slug / "seed-0" / "config.json").unlink()       # as in a fresh clone: no finished model
    params = validate(merge(yaml.safe_load((project / "params.yaml").read_text()),
                            yaml.safe_load((project / "toy-profile.yaml").read_text())))
    before = torch.load(zoo.run_folder(project, "sample-texture", "adv", 0) / "generator.pt", weights_only=True)
    train_dataset(params, "sample-texture", ["mse", "adv"], root=project, stop_after=0)   # training would stop at once
    for slug in ("mse", "adv"):
        config = json.loads((models / slug / "seed-0" / "config.json").read_text())
        assert config["completed"] and not (models / slug / "seed-0" / "checkpoint.pt").exists()
    after = torch.load(models / "adv" / "seed-0" / "generator.pt", weights_only=True)
    assert all(torch.equal(after["state_dict"][k], v.float()) for k, v in before["state_dict"].items())


def test_bad_arguments_are_one_line_and_exit_2(toy_campaign):
    project, _ = toy_campaign
    result = _campaign(project, "--jobs", "0")
    assert result.returncode == 2 and result.stderr.strip() == "error: --jobs: must be a positive integer, got 0"
    missing = subprocess.run([sys.executable, "-m", "pipeline.campaign", "--plan", "nope.yaml"], cwd=project,
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: nope.yaml: plan file not found"
    assert Run("mse", 0).key == "mse/seed-0"
