"""The GPU lease (pipeline.lease): plan, profile, deadline planner, plan skipping, bundle limits, import blocker,
and the whole lease rehearsed on this CPU (slow: it downloads the shipped files and trains toy runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import paths
from pipeline.config import apply_overlay, load_params
from pipeline.data import crop
from pipeline.errors import ConfigError, UserError
from pipeline.lease.bundle import (MAX_FILE_BYTES, Bundle, check_limits, read_bundle,
                                   update_selection, write_model)
from pipeline.lease.carry import blocked_modules, left_home, write_blocker
from pipeline.lease.plan import (Estimate, Run, choose_next, evaluable_selection, load_plan, pending_runs,
                                 pick_setting, profile_params, run_digest, simulate, zoo_dir)
from pipeline.nets import strategies as registry
from pipeline.nets.networks import Generator, load_sr_model, save_generator
from pipeline.training.zoo import restore_from_zoo, take

REPO = Path(__file__).resolve().parents[1]
T3 = ["mse", "adv,mse", "srgan", "adv,rec"]
T2 = ["dis", "rec", "dis,rec", "adv"]


def copy_repo(dest: Path) -> Path:
    """The files that go to the GPU machine (tracked and untracked-not-ignored), as a fresh git checkout in `dest`."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, names):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


# ---------------------------------------------------------------- plan and profile

def test_plan_lists_table3_then_table2_seed0_then_seeds_1_and_2():
    plan = load_plan(REPO / "configs" / "lease-plan.yaml")
    runs = [(r.strategy, r.seed) for r in plan.runs]
    assert runs[:4] == [(s, 0) for s in T3]
    assert runs[4:8] == [(s, 0) for s in T2]
    assert sorted(runs[8:]) == sorted((s, k) for k in (1, 2) for s in T3 + T2)
    assert plan.dataset == "sample-aerial" and plan.profile == Path("configs/paper-aerial.yaml")


def test_plan_rejects_unknown_keys_and_untrained_strategies(tmp_path):
    bad = tmp_path / "plan.yaml"
    bad.write_text("dataset: d\nprofile: p.yaml\nruns: [{seed: 0, strategies: [mse]}]\nrehearsal: {overlay: o, "
                   "runs: [{seed: 0, strategies: [mse]}]}\nextra: 1\n")
    with pytest.raises(ConfigError, match="extra: unknown key; valid keys: dataset, profile"):
        load_plan(bad)
    bad.write_text(bad.read_text().replace("extra: 1\n", "").replace("runs: [{seed: 0, strategies: [mse]}]\nreh",
                                                                      "runs: [{seed: 0, strategies: [bicubic]}]\nreh"))
    with pytest.raises(ConfigError, match="bicubic trains nothing"):
        load_plan(bad)


def test_profile_equals_what_configure_writes_into_params_yaml(tmp_path):
    """The lease merges the overlay with PyYAML alone (no ruamel there); the train stage reads the same values."""
    plan = load_plan(REPO / "configs" / "lease-plan.yaml")
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    apply_overlay(tmp_path / "params.yaml", REPO / plan.profile)
    assert profile_params(REPO, plan) == load_params(tmp_path / "params.yaml")


def test_paper_aerial_keeps_every_training_setting_of_the_paper_profile():
    plan = load_plan(REPO / "configs" / "lease-plan.yaml")
    params = profile_params(REPO, plan)
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    for key, value in paper["train"].items():
        if key in ("seeds", "checkpoint_every"):   # the seeds imported so far; checkpoints never change results
            continue
        if isinstance(value, dict):
            assert {k: params["train"][key][k] for k in value} == value, key
        else:
            assert params["train"][key] == value, key
    assert {k: params["crop"][k] for k in paper["crop"]} == paper["crop"]
    assert params["datasets"] == ["sample-aerial"]
    assert params["data"]["sample-aerial"]["crop"]["prep"] == "crop"
    assert params["data"]["sample-aerial"]["crop"]["split"] == "by_region"


def test_disjoint_squares_count_a_grid_in_each_band():
    regions = [("a", "train", 0, 700), ("a", "test", 700, 1212), ("b", "test", 0, 255)]
    shapes = {"a": (1212, 1000), "b": (255, 900)}
    # a's test band: 512 rows x 1000 columns = 2 x 3 squares of 256; b's band is too short
    assert crop.disjoint_squares(regions, shapes, 256) == {"train": 2 * 3, "test": 6}


# ---------------------------------------------------------------- the deadline planner

def test_estimate_counts_the_autoencoder_phase_slowdown_and_overhead():
    train = {"iterations": 100, "rec_pretrain": 50, "pretrain_mse": 0}
    est = Estimate({"rec": 0.2, "mse": 0.1}, rec_step=0.1, slowdown=2.0, overhead_s=5.0, margin=1.0)
    assert est.seconds("rec", train) == pytest.approx(5 + 2 * (50 * 0.1 + 100 * 0.2))
    assert est.seconds("mse", train) == pytest.approx(5 + 2 * (100 * 0.1))   # no auto-encoder phase
    est.correction = 1.5
    assert est.seconds("mse", train) == pytest.approx(5 + 1.5 * 2 * 10)


def test_choose_next_takes_the_first_run_in_order_that_ends_by_the_deadline():
    a, b, c = Run("mse", 0), Run("srgan", 0), Run("adv", 0)
    seconds = {a: 80.0, b: 30.0, c: 10.0}.get
    assert choose_next([a, b, c], seconds, 0.0, 100.0) == a
    assert choose_next([a, b, c], seconds, 30.0, 100.0) == b     # a no longer fits: the next one that does
    assert choose_next([a, b, c], seconds, 70.0, 100.0) == b     # ends exactly at the deadline: fits
    assert choose_next([a, b, c], seconds, 75.0, 100.0) == c
    assert choose_next([a, b, c], seconds, 95.0, 100.0) is None


def test_simulate_fills_two_slots_and_leaves_out_what_would_end_late():
    a, b, c, d = Run("mse", 0), Run("adv,mse", 0), Run("srgan", 0), Run("adv,rec", 0)
    seconds = {a: 50.0, b: 30.0, c: 40.0, d: 10.0}.get
    started, left = simulate([a, b, c, d], seconds, 2, 0.0, 100.0)
    assert [(r, s, e) for r, s, e in started] == [(a, 0, 50), (b, 0, 30), (c, 30, 70), (d, 50, 60)]
    assert left == []
    started, left = simulate([a, b, c, d], seconds, 2, 0.0, 60.0)
    assert [(r, s, e) for r, s, e in started] == [(a, 0, 50), (b, 0, 30), (d, 30, 40)]
    assert left == [c]                                        # 40 s from 40 or 50 ends after 60
    started, left = simulate([a], seconds, 1, 20.0, 60.0)
    assert started == [] and left == [a]


def test_pick_setting_prefers_what_finishes_the_most_runs_then_throughput():
    runs = [Run("mse", 0), Run("adv", 0), Run("srgan", 0), Run("adv,rec", 0)]
    one = {"mode": "no MPS", "procs": 1, "speedup": 1.0, "slowdown": 1.0}
    four = {"mode": "MPS", "procs": 4, "speedup": 2.0, "slowdown": 2.0}
    seconds_for = lambda alone: (lambda option: (lambda run: alone * option["slowdown"]))
    # short runs: 4 at once (each 20 s) finish all four by 30 s; one at a time only one
    assert pick_setting([one, four], runs, seconds_for(10.0), 0.0, 30.0) is four
    # long runs: at 4 at once none ends by 30 s (50 s each); alone, one does
    assert pick_setting([one, four], runs, seconds_for(25.0), 0.0, 30.0) is one
    # the same number of runs: the higher throughput, then the fewer processes
    eight = {"mode": "no MPS", "procs": 8, "speedup": 2.0, "slowdown": 4.0}
    assert pick_setting([eight, four], runs, seconds_for(1.0), 0.0, 100.0) is four


# ---------------------------------------------------------------- plan skipping

def _saved_run(folder: Path, run: Run, digest: str, dataset: str = "sample-aerial") -> None:
    torch.manual_seed(0)
    generator = Generator(blocks=1, width=8, upsample="nearest", scale=4)
    folder.mkdir(parents=True, exist_ok=True)
    save_generator(generator, {"blocks": 1, "width": 8, "upsample": "nearest", "scale": 4}, folder / "generator.pt")
    (folder / "log.csv").write_text("iteration,loss_g,loss_content\n1,0.5,0.5\n")
    config = {"strategy": run.strategy, "slug": run.slug, "dataset": dataset, "seed": run.seed, "inputs_hash": digest,
              "completed": True, "scale": 4, "iterations": 1, "crop": {"hr_size": 32}, "train": {}}
    (folder / "config.json").write_text(json.dumps(config))


def test_runs_already_imported_are_skipped_in_plan_order(tmp_path):
    plan = load_plan(REPO / "configs" / "lease-plan.yaml")
    params = profile_params(REPO, plan)
    digests = {run: run_digest(params, run, "m" * 64, "v" * 64) for run in plan.runs}
    first, second, third = plan.runs[:3]
    _saved_run(zoo_dir(tmp_path, plan.zoo_folder, first), first, digests[first])         # committed zoo
    _saved_run(tmp_path / paths.model_dir(plan.dataset, second.slug, second.seed), second, digests[second])
    _saved_run(zoo_dir(tmp_path, plan.zoo_folder, third), third, "0" * 64)               # other inputs: retrain
    pending = pending_runs(plan.runs, digests, tmp_path, plan)
    assert pending == [third] + plan.runs[3:]


def test_the_lease_keeps_its_runs_in_a_zoo_folder_apart_from_the_campaigns(tmp_path):
    plan = load_plan(REPO / "configs" / "lease-plan.yaml")
    assert plan.dataset == "sample-aerial" and plan.zoo_folder == "paper-aerial"
    (tmp_path / "plan.yaml").write_text((REPO / "configs" / "lease-plan.yaml").read_text()
                                        .replace("zoo: paper-aerial", "zoo: ../escape"))
    with pytest.raises(ConfigError, match="zoo: a folder name"):
        load_plan(tmp_path / "plan.yaml")
    without = tmp_path / "without.yaml"
    without.write_text("\n".join(line for line in (REPO / "configs" / "lease-plan.yaml").read_text().splitlines()
                                 if not line.startswith("zoo:")))
    assert load_plan(without).zoo_folder == "sample-aerial"


def test_the_trainer_takes_a_zoo_run_from_any_folder_into_its_configs_dataset(tmp_path):
    run = Run("mse", 0)
    _saved_run(zoo_dir(tmp_path, "paper-aerial", run), run, "d" * 64)
    _saved_run(zoo_dir(tmp_path, "sample-aerial", run), run, "e" * 64)      # the campaign's run: other inputs
    assert take(tmp_path, "sample-aerial", "mse", 0, "f" * 64) is None
    restored = take(tmp_path, "sample-aerial", "mse", 0, "d" * 64)
    assert restored == tmp_path / paths.model_dir("sample-aerial", "mse", 0)
    assert json.loads((restored / "config.json").read_text())["inputs_hash"] == "d" * 64
    assert not (tmp_path / paths.model_dir("paper-aerial", "mse", 0)).exists()


def test_digest_changes_with_the_data_and_vgg_only_for_vgg_strategies():
    plan = load_plan(REPO / "configs" / "lease-plan.yaml")
    params = profile_params(REPO, plan)
    mse, srgan = Run("mse", 0), Run("srgan", 0)
    assert run_digest(params, mse, "a" * 64, "v") == run_digest(params, mse, "a" * 64, "w")
    assert run_digest(params, srgan, "a" * 64, "v") != run_digest(params, srgan, "a" * 64, "w")
    assert run_digest(params, mse, "a" * 64, None) != run_digest(params, mse, "b" * 64, None)
    assert run_digest(params, mse, "a" * 64, None) != run_digest(params, Run("mse", 1), "a" * 64, None)


def test_evaluable_selection_is_the_largest_fully_imported_cross_product():
    plan = load_plan(REPO / "configs" / "lease-plan.yaml")
    assert evaluable_selection(set(), plan.runs) == (["bicubic"], [0])
    t3 = {Run(s, 0) for s in T3}
    assert evaluable_selection(t3, plan.runs) == (["bicubic", "mse", "adv,mse", "srgan", "adv,rec"], [0])
    done = t3 | {Run(s, 0) for s in T2} | {Run(s, k) for s in T3 for k in (1, 2)}
    strategy, seeds = evaluable_selection(done, plan.runs)     # Table 3 x 3 seeds (12) beats all x 1 seed (8)
    assert seeds == [0, 1, 2] and set(strategy) == {"bicubic", *T3}


def test_update_selection_sets_the_keys_and_keeps_the_comments(tmp_path):
    overlay = tmp_path / "paper-aerial.yaml"
    shutil.copy2(REPO / "configs" / "paper-aerial.yaml", overlay)
    update_selection(overlay, ["bicubic", "mse", "adv,rec"], [0, 1])
    data = yaml.safe_load(overlay.read_text())
    assert data["strategy"] == ["bicubic", "mse", "adv,rec"] and data["train"]["seeds"] == [0, 1]
    assert "# The paper's Sat set" in overlay.read_text()
    assert {k: v for k, v in data["train"].items() if k != "seeds"} == \
        {k: v for k, v in yaml.safe_load((REPO / "configs" / "paper-aerial.yaml").read_text())["train"].items()
         if k != "seeds"}


# ---------------------------------------------------------------- bundle limits and packing

def test_check_limits_finds_each_kind_of_breach(tmp_path):
    ok = tmp_path / "ok"
    (ok / "bench").mkdir(parents=True)
    (ok / "bench" / "results-cpu.md").write_text("x")
    (ok / "lease.json").write_text("{}")
    assert check_limits(ok) == []
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "runs-01.tar.gz", "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    assert any("over 16 MiB" in p for p in check_limits(big))
    many = tmp_path / "many"
    many.mkdir()
    for i in range(9):
        (many / f"f{i}").write_text("x")
    assert check_limits(many) == ["9 files, over 8"]
    odd = tmp_path / "odd"
    (odd / "a" / "b" / "c").mkdir(parents=True)
    (odd / "a" / "b" / "c" / "deep.txt").write_text("x")
    (odd / "a b.txt").write_text("x")
    problems = check_limits(odd)
    assert any("more than 2 folders deep" in p for p in problems) and any("not a plain name" in p for p in problems)


def test_bundle_holds_float16_generators_that_import_back_as_float32(tmp_path):
    run = Run("mse", 0)
    source = tmp_path / "models" / "mse" / "seed-0"
    torch.manual_seed(1)
    generator = Generator(blocks=2, width=16, upsample="nearest", scale=4)
    source.mkdir(parents=True)
    arch = {"blocks": 2, "width": 16, "upsample": "nearest", "scale": 4}
    save_generator(generator, arch, source / "generator.pt")
    (source / "config.json").write_text(json.dumps({"strategy": "mse", "dataset": "d", "seed": 0, "scale": 4,
                                                    "completed": True, "inputs_hash": "h"}))
    (source / "log.csv").write_text("iteration,loss_g\n1,0.5\n")
    out = tmp_path / "out"
    bundle = Bundle(out)
    assert bundle.add(source, "d/mse/seed-0")
    assert check_limits(out) == []
    (out / "lease.json").write_text("{}")
    _, runs = read_bundle(out, tmp_path / "unpacked")
    packed = torch.load(runs[0] / "generator.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in packed.values() if v.is_floating_point())
    assert (runs[0] / "generator.pt").stat().st_size < 0.6 * (source / "generator.pt").stat().st_size
    dest = tmp_path / "imported" / "d" / run.key
    write_model(runs[0], dest, {"imported_from": "test"})
    model = load_sr_model(dest)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        expected = generator.eval()(x)
        assert torch.allclose(model(x), expected, atol=2e-2)
        assert not torch.equal(model(x), expected)               # float16 weights: close, not identical
    assert json.loads((dest / "config.json").read_text())["weights_precision"] == "float16"


# ---------------------------------------------------------------- the GPU machine's packages, imitated

def test_blocker_allows_a_blocked_module_only_from_the_shipped_folder(tmp_path):
    shipped = tmp_path / "site"
    (shipped / "lpips").mkdir(parents=True)
    (shipped / "lpips" / "__init__.py").write_text("WHERE = 'shipped'\n")
    env_vars = write_blocker(tmp_path / "blocker", [shipped], ["lpips", "resize_right"])
    env = {**os.environ, **env_vars, "PYTHONPATH": f"{tmp_path / 'blocker'}{os.pathsep}{shipped}"}
    code = "import lpips; print(lpips.WHERE)\ntry:\n import resize_right\nexcept ModuleNotFoundError as e:\n print(e)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["shipped", "No module named 'resize_right' (not on the GPU machine, and "
                                          "the lease does not ship it)"]


def test_blocked_modules_are_those_the_gpu_machine_lacks():
    blocked = set(blocked_modules())
    assert {"lpips", "dvc", "dvclive", "resize_right", "ruamel"} <= blocked
    assert not {"torch", "numpy", "cv2", "skimage", "yaml", "pandas", "scipy", "jinja2", "tqdm"} & blocked


def test_left_home_names_the_reports_and_the_zoo_folders_but_the_plans(tmp_path):
    for folder in ("reports/v1", "zoo/paper-aerial/mse", "zoo/sample-aerial/mse", "zoo/kodak24/mse", "zoo/dtd10"):
        (tmp_path / folder).mkdir(parents=True)
    assert left_home(tmp_path, "paper-aerial") == [Path("reports"), Path("zoo/dtd10"), Path("zoo/kodak24"),
                                                   Path("zoo/sample-aerial")]
    assert left_home(tmp_path / "empty", "paper-aerial") == []


def test_preflight_without_the_shipped_folder_is_one_line_and_exit_2(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    result = subprocess.run([sys.executable, "-m", "pipeline.lease", "--preflight"], cwd=repo, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: ") and "python -m pipeline.lease --prepare" in result.stderr


# ---------------------------------------------------------------- the rehearsal (slow)

@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, user_cache):
    """`python -m pipeline.lease --rehearse --out DIR` in a copy of the working tree (it prepares .lease/ there)."""
    base = tmp_path_factory.mktemp("lease")
    repo = copy_repo(base / "repo")
    for folder in left_home(repo, load_plan(repo / "configs" / "lease-plan.yaml").zoo_folder):
        shutil.rmtree(repo / folder)       # as docs/gpu-bundle.md says: what the lease does not read stays home
    env = {**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}
    if user_cache is not None:
        env["GCN_BENCH_CACHE"] = str(user_cache)
    out = base / "out"
    result = subprocess.run([sys.executable, "-m", "pipeline.lease", "--rehearse", "--out", str(out)], cwd=repo,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return repo, out, result.stdout


@pytest.mark.slow
def test_rehearsal_bundle_is_within_the_device_limits(rehearsal):
    repo, out, stdout = rehearsal
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8
    assert all(p.stat().st_size <= 16 * 2 ** 20 for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)          # at most 2 folders deep
    assert all(part.replace(".", "").replace("_", "").replace("-", "").isalnum()
               for p in out.rglob("*") for part in p.relative_to(out).parts)
    assert check_limits(out) == []
    assert (out / "bench" / "results-cpu-rehearsal.md").is_file()
    assert not (out / "bench" / "results-cpu.md").exists()
    assert (repo / "bench" / "results-cpu.md").read_bytes() == (REPO / "bench" / "results-cpu.md").read_bytes()
    lease = json.loads((out / "lease.json").read_text())
    plan = load_plan(repo / "configs" / "lease-plan.yaml")
    assert {k: v["status"] for k, v in lease["runs"].items()} == {r.key: "finished" for r in plan.rehearsal_runs}
    assert "dvclive" in lease["packages"] and "error" not in lease
    assert "found up to date by the trainer" in stdout
    table = (out / "bench" / "results-cpu-rehearsal.md").read_text()
    for name in registry.NAMES[1:]:
        assert f"| {name} |" in table


def project_with_lease_inputs(repo: Path, plan, root: Path) -> Path:
    """A project folder holding what the lease shipped: the dataset's raw images and the weight archives."""
    from pipeline.lease.carry import data_dir, weights_dir
    from pipeline.nets.weights import archives_dir

    shutil.copytree(data_dir(repo, plan.dataset), root / paths.raw_dir(plan.dataset))
    archives_dir(root).mkdir(parents=True)
    for archive in weights_dir(repo).glob("*"):
        shutil.copy2(archive, archives_dir(root) / archive.name)
    return root


@pytest.mark.slow
def test_imported_runs_are_up_to_date_for_the_trainer_and_the_zoo_restores_them(rehearsal, tmp_path):
    from pipeline.lease.bundle import import_bundle
    from pipeline.lease.rehearsal import not_up_to_date

    repo, out, _ = rehearsal
    plan = load_plan(repo / "configs" / "lease-plan.yaml")
    root = project_with_lease_inputs(repo, plan, tmp_path / "project")
    imported = import_bundle(out, repo, root, plan, rehearse=True)
    assert len(imported) == len(plan.rehearsal_runs)
    for model_dir in imported:
        assert (model_dir / "dvclive" / "metrics.json").is_file()
        assert json.loads((model_dir / "config.json").read_text())["lease"]["id"]
    params = profile_params(repo, plan, rehearse=True)
    stamps = {d: (d / "generator.pt").stat().st_mtime_ns for d in imported}
    assert not_up_to_date(params, plan.dataset, imported, root) == []
    assert {d: (d / "generator.pt").stat().st_mtime_ns for d in imported} == stamps     # nothing retrained
    shutil.rmtree(root / paths.MODELS)
    restored = restore_from_zoo(root, plan.zoo_folder)
    assert sorted(restored) == sorted(imported)
    assert not_up_to_date(params, plan.dataset, restored, root) == []
    assert all((d / "dvclive" / "metrics.json").is_file() for d in restored)


@pytest.mark.slow
def test_import_refuses_a_bundle_trained_with_other_parameters(rehearsal, tmp_path):
    from pipeline.lease.bundle import import_bundle

    repo, out, _ = rehearsal
    other = tmp_path / "repo"
    shutil.copytree(repo, other, ignore=shutil.ignore_patterns(".lease", "data", "models", ".git"))
    overlay = other / "configs" / "lease-rehearsal.yaml"
    overlay.write_text(overlay.read_text().replace("iterations: 6", "iterations: 7"))
    plan = load_plan(other / "configs" / "lease-plan.yaml")
    root = project_with_lease_inputs(repo, plan, tmp_path / "project")
    with pytest.raises(UserError, match="trained with other parameters or code; nothing imported"):
        import_bundle(out, other, root, plan, rehearse=True)
    assert not (root / paths.MODELS).exists() and not (root / "zoo").exists()
