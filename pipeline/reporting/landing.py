"""The landing page reports/index.html: which version leads it, and which runs are smoke runs.

Both rules read a version's own numbers (reports/<version>/summary.json), never its name:

- A run is a **smoke run** when, on every dataset it evaluated, every trained method stays below
  bicubic both on PSNR-Y and on the selection rule's score (max PE, the largest perceptual error
  over the available networks). Such models are too short-trained to say which loss is better; their
  page carries the banner SMOKE_BANNER at the top.
- The **lead** of reports/index.html is the version whose trained methods beat bicubic (on either
  score) on the most datasets, the newest among equals: a three-domain campaign leads over a later
  one-domain reference, and a newer run of the same breadth replaces an older one. When no version
  beats bicubic, the newest version leads (its smoke banner says what it is).

The landing page is the lead's own page (the part below its header, read back from
reports/<lead>/index.html, so a version rendered by older code still leads as it was rendered),
under a header that says why it leads, followed by the list of every version with its status.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from pipeline.nets import strategies

SMOKE_BANNER = "smoke run: too short to compare methods"
# The scores a trained method must beat bicubic on (either one): (key, label, higher is better).
SCORES = (("psnr_y", "PSNR-Y", True), ("max_pe", "max PE", False))
BASELINE = next(name for name in strategies.NAMES if not strategies.get(name).trains_generator)
# The page's content below its header: what reports/index.html shows of the lead.
_BODY = re.compile(r"</header>(.*)</body>", re.S)


def _trains(name: str) -> bool:
    """True for a method with a trained generator; a name the registry no longer knows counts as trained."""
    return name not in strategies.REGISTRY or strategies.get(name).trains_generator


def _better(value: Any, reference: Any, higher: bool) -> bool:
    if value is None or reference is None:
        return False
    return value > reference if higher else value < reference


def bicubic_comparison(rows: Mapping[str, Mapping]) -> dict | None:
    """One dataset's trained methods against bicubic, from a summary's per-strategy means.

    Returns {"beats": bool, "scores": [{label, bicubic, best, method, higher}]}: per score, bicubic's
    mean and the best trained method's; None when the dataset has no bicubic row or no trained method.
    """
    trained = {name: row for name, row in rows.items() if _trains(name)}
    if BASELINE not in rows or not trained:
        return None
    scores, beats = [], False
    for key, label, higher in SCORES:
        reference = rows[BASELINE].get(key)
        values = {name: row.get(key) for name, row in trained.items() if row.get(key) is not None}
        if not values:
            continue
        method = (max if higher else min)(values, key=values.get)
        beats = beats or _better(values[method], reference, higher)
        scores.append({"label": label, "bicubic": reference, "best": values[method], "method": method,
                       "higher": higher})
    return {"beats": beats, "scores": scores}


def bicubic_comparisons(summary: Mapping) -> dict[str, dict]:
    """Per dataset of a version's summary with bicubic and trained methods: `bicubic_comparison`."""
    out = {}
    for dataset, entry in (summary.get("datasets") or {}).items():
        found = bicubic_comparison(entry.get("strategies") or {})
        if found is not None:
            out[dataset] = found
    return out


def datasets_beating_bicubic(summary: Mapping) -> list[str]:
    """The datasets of a version on which some trained method beats bicubic (PSNR-Y or max PE)."""
    return [ds for ds, found in bicubic_comparisons(summary).items() if found["beats"]]


def is_smoke_run(summary: Mapping) -> bool:
    """True when every trained method stays below bicubic on every dataset (see the module docstring).

    A version without bicubic or without trained methods cannot be judged and is not called a smoke run.
    """
    found = bicubic_comparisons(summary)
    return bool(found) and not any(f["beats"] for f in found.values())


def lead_version(versions: list[dict]) -> dict | None:
    """The version reports/index.html leads with (see the module docstring); None without versions."""
    if not versions:
        return None
    beating = [(len(datasets_beating_bicubic(v)), str(v.get("created", "")), v["folder"], i)
               for i, v in enumerate(versions)]
    best = max(beating)
    if best[0] == 0:    # nothing beats bicubic: the newest version, whatever it is
        return max(versions, key=lambda v: (str(v.get("created", "")), v["folder"]))
    return versions[best[3]]


def version_status(summary: Mapping) -> str:
    """A version's status in words, for the lists of versions."""
    found = bicubic_comparisons(summary)
    if not found:
        return "no bicubic to compare with"
    if is_smoke_run(summary):
        return SMOKE_BANNER
    beating = [ds for ds, f in found.items() if f["beats"]]
    return f"trained methods beat bicubic on {len(beating)} of {len(found)} datasets"


def page_body(page: Path) -> str | None:
    """The HTML of a version's page below its header (None when the page is missing or has no header)."""
    if not page.is_file():
        return None
    match = _BODY.search(page.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def landing_context(reports: Path, versions: list[dict]) -> dict:
    """What index.html.j2 needs: the lead, why it leads, its page body, every version with its status."""
    lead = lead_version(versions)
    rows = [{**v, "status": version_status(v), "smoke": is_smoke_run(v),
             "lead": lead is not None and v["folder"] == lead["folder"]} for v in versions]
    if lead is None:
        return {"lead": None, "why": "", "body": None, "versions": rows, "newer_smoke": []}
    beating = datasets_beating_bicubic(lead)
    if beating:
        why = (f"its trained methods beat bicubic on {len(beating)} dataset(s) ({', '.join(beating)}), "
               "the most of any version; the newest among equals")
    else:
        why = "no version's trained methods beat bicubic yet: the newest version is shown"
    newer = [r["folder"] for r in rows if r["smoke"] and str(r.get("created", "")) > str(lead.get("created", ""))]
    return {"lead": lead, "why": why, "body": page_body(reports / lead["folder"] / "index.html"),
            "versions": rows, "newer_smoke": newer}
