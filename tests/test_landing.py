"""The landing page's rules (pipeline.reporting.landing): smoke runs and the lead version, decided from a run's numbers."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.nets import strategies
from pipeline.reporting import landing
from pipeline.reporting.report import list_versions

TRAINED = [n for n in strategies.NAMES if strategies.get(n).trains_generator][:3]


def rows(bicubic: tuple[float, float], trained: list[tuple[float, float]]) -> dict:
    """A summary's per-strategy means: (PSNR-Y, max PE) of bicubic and of the first trained methods."""
    out = {"bicubic": {"psnr_y": bicubic[0], "max_pe": bicubic[1]}}
    for name, (psnr_y, max_pe) in zip(TRAINED, trained):
        out[name] = {"psnr_y": psnr_y, "max_pe": max_pe}
    return out


# the default run at 8 iterations (reports/5ab56b5-40167a7f): bicubic far ahead on both scores
SMOKE = rows((32.15, 1.80), [(20.17, 3.76), (20.19, 3.76), (14.70, 3.75)])
# the aerial CPU reference (reports/fa82654-347a6ae1): every trained method passes bicubic
TRAINED_WELL = rows((19.66, 2.56), [(20.14, 2.34), (20.14, 2.35), (16.62, 2.45)])
# the authors' LR convention (reports/7e6e8dd-c6de958e): below bicubic in PSNR-Y, ahead in max PE
PERCEPTUAL_ONLY = rows((20.38, 2.44), [(20.30, 2.28), (20.16, 2.62), (15.49, 2.72)])


def version(folder: str, created: str, **datasets: dict) -> dict:
    return {"folder": folder, "version": folder, "created": created, "git": {"short": None, "dirty": False},
            "params": {}, "datasets": {ds.replace("_", "-"): {"strategies": r} for ds, r in datasets.items()}}


def test_smoke_run_is_decided_by_the_numbers():
    assert landing.is_smoke_run(version("any-name", "1", natural=SMOKE, texture=SMOKE))
    # beating bicubic on either score on one dataset is a trained result, whatever the run is called
    assert not landing.is_smoke_run(version("smoke", "1", natural=SMOKE, aerial=TRAINED_WELL))
    assert not landing.is_smoke_run(version("smoke", "1", aerial=PERCEPTUAL_ONLY))
    psnr_only = rows((20.0, 2.0), [(20.5, 2.5)])
    assert not landing.is_smoke_run(version("x", "1", aerial=psnr_only))
    # no bicubic (or no trained method): nothing to judge by, so no banner
    no_bicubic = {k: v for k, v in TRAINED_WELL.items() if k != "bicubic"}
    assert not landing.is_smoke_run(version("x", "1", aerial=no_bicubic))
    assert not landing.is_smoke_run(version("x", "1", aerial={"bicubic": SMOKE["bicubic"]}))
    # a method with an n/a score is judged on the score it has
    missing = rows((32.0, 1.8), [(20.0, 3.7)])
    missing[TRAINED[0]]["max_pe"] = None
    assert landing.is_smoke_run(version("x", "1", aerial=missing))
    assert landing.version_status(version("x", "1", aerial=SMOKE)) == landing.SMOKE_BANNER


def test_bicubic_comparison_names_the_best_trained_method():
    found = landing.bicubic_comparison(SMOKE)
    psnr, pe = found["scores"]
    assert not found["beats"]
    assert (psnr["method"], psnr["best"], psnr["bicubic"]) == (TRAINED[1], 20.19, 32.15)
    assert (pe["method"], pe["best"]) == (TRAINED[2], 3.75)


def test_lead_is_the_broadest_newest_result_beating_bicubic():
    smoke = version("5ab56b5-40167a7f", "2026-11-30T04:52", natural=SMOKE, texture=SMOKE, aerial=SMOKE)
    reference = version("fa82654-347a6ae1", "2026-11-30T02:31", aerial=TRAINED_WELL)
    older = version("7e6e8dd-c6de958e", "2026-11-30T00:07", aerial=PERCEPTUAL_ONLY)
    # the newest version is a smoke run: the newest trained result leads
    assert landing.lead_version([smoke, reference, older])["folder"] == reference["folder"]
    assert landing.lead_version([older, smoke])["folder"] == older["folder"]
    # a three-domain result leads over a newer one-domain reference
    campaign = version("campaign", "2026-11-29", natural=TRAINED_WELL, texture=PERCEPTUAL_ONLY, aerial=TRAINED_WELL)
    assert landing.lead_version([smoke, reference, campaign])["folder"] == "campaign"
    # nothing beats bicubic: the newest version, shown with its banner
    first = version("first", "2026-11-01", aerial=SMOKE)
    assert landing.lead_version([first, smoke])["folder"] == smoke["folder"]
    assert landing.lead_version([]) is None


def test_landing_context_reads_the_lead_page_and_lists_every_status(tmp_path):
    reports = tmp_path / "reports"
    pages = {"smoke-1": ("2026-11-30T05", {"aerial": SMOKE}), "ref": ("2026-11-30T02", {"aerial": TRAINED_WELL})}
    for folder, (created, datasets) in pages.items():
        (reports / folder).mkdir(parents=True)
        record = version(folder, created, **datasets)
        (reports / folder / "summary.json").write_text(json.dumps(record))
        (reports / folder / "index.html").write_text(
            f"<html><body><header><h1>{folder}</h1></header><main>body of {folder}</main></body></html>")
    context = landing.landing_context(reports, list_versions(reports))
    assert context["lead"]["folder"] == "ref" and context["body"] == "<main>body of ref</main>"
    assert context["newer_smoke"] == ["smoke-1"]
    status = {v["folder"]: (v["smoke"], v["lead"]) for v in context["versions"]}
    assert status == {"smoke-1": (True, False), "ref": (False, True)}
    assert landing.page_body(Path(tmp_path / "absent.html")) is None
