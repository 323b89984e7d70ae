"""The standard SR protocol's table: our scores on Set5 / Set14 / BSD100 beside the published ones.

Pure table logic (no HTML): pipeline.reporting.report renders it. The published numbers are vendored in
pipeline/resources/sr_benchmark_results.csv, one row per (test-only set, method, source), keyed
by the strategy name of our registry (mse = SRResNet-MSE, adv,mse = SRGAN-MSE, srgan =
SRGAN-VGG54, ...), with the paper's own name and the table it comes from. A published method we
did not evaluate (or that the registry does not have) is not shown: each of our rows carries the
published rows of the same method, one per source, as the GCN tables show the paper's row.

Columns: PSNR-Y and SSIM-Y (SRGAN 3.1 and the DP paper 4.2: luma, `scale`-pixel border shaved),
LPIPS (the DP paper's; the network is not stated there: compared with our AlexNet LPIPS, the lpips
package's default), and our L2 and DSSIM (the GCN paper's low-level columns, no published value).

Conventions: our PSNR-Y and SSIM-Y are those of the EDSR-style tables (MATLAB bicubic LR, luma,
border shaved). A source's column follows another convention when its bicubic row, the one method
every source scores alike, departs from the Y-channel reference's bicubic row (`Y_CHANNEL_REFERENCE`)
by more than `CONVENTION_TOLERANCE`: SRGAN's SSIM (0.8211 on Set5 against 0.8104, its PSNR 28.43
against 28.42), the DP paper's PSNR and SSIM. Such cells are marked in the table (`other_conventions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from pipeline import paths
from pipeline.nets import strategies
from pipeline.reporting import tables

SET_LABELS = {"set5": "Set5", "set14": "Set14", "bsd100": "BSD100", "urban100": "Urban100"}
# Bicubic on the Y channel as the EDSR-style tables compute it (MATLAB LR and upscaling, luma, border shaved)
Y_CHANNEL_REFERENCE = "ESRGAN (Wang et al. 2018), supplementary Table 2"
# Beyond rounding to the printed digits and implementation differences (SRGAN's bicubic PSNR is within 0.02 dB)
CONVENTION_TOLERANCE = {"psnr_y": 0.05, "ssim_y": 0.002}


@dataclass(frozen=True)
class BenchColumn:
    """One column of the protocol's table: our key in metrics/<D>-benchmarks.json and the published one."""

    key: str
    label: str
    published: str | None
    lower_is_better: bool
    decimals: int


COLUMNS = (
    BenchColumn("psnr_y", "PSNR-Y (dB)", "psnr_y", False, 2),
    BenchColumn("ssim_y", "SSIM-Y", "ssim_y", False, 4),
    BenchColumn("pe_alex_lin", "LPIPS (Alex)", "lpips", True, 4),
    BenchColumn("l2", "L2", None, True, 4),
    BenchColumn("ssim_error", "DSSIM", None, True, 4),
)


@dataclass
class Published:
    """One source's numbers for one method on one set."""

    source: str
    paper_method: str
    values: dict[str, float | None]
    note: str = ""
    conventions: dict[str, str] = field(default_factory=dict)   # column key -> why it is another convention


@dataclass
class BenchRow:
    strategy: str
    values: dict[str, float | None]
    intervals: dict[str, tuple[float, float] | None]
    best: dict[str, bool] = field(default_factory=dict)
    published: list[Published] = field(default_factory=list)


@dataclass
class BenchBlock:
    """Models trained on one dataset, scored on one test-only set."""

    dataset: str
    benchmark: str
    n_images: int
    rows: list[BenchRow]

    @property
    def title(self) -> str:
        return f"trained on {self.dataset}, scored on {SET_LABELS.get(self.benchmark, self.benchmark)}"

    @property
    def convention_notes(self) -> list[str]:
        """Why each marked published column follows another convention (each reason once, in row order)."""
        notes = [note for row in self.rows for pub in row.published for note in pub.conventions.values()]
        return list(dict.fromkeys(notes))


def load_published(path: Path = paths.PUBLISHED_SR_RESULTS) -> pd.DataFrame:
    """The vendored published numbers: benchmark, method, paper_method, psnr_y, ssim_y, lpips, source, note."""
    return pd.read_csv(path, dtype={"benchmark": str, "method": str, "paper_method": str, "source": str,
                                    "note": str}, keep_default_na=True)


def _value(row: pd.Series, column: BenchColumn) -> float | None:
    return None if column.published is None or pd.isna(row[column.published]) else float(row[column.published])


def published_rows(published: pd.DataFrame, benchmark: str, method: str) -> list[Published]:
    """Every source's numbers for one of our methods on one set (none when no source gives them),
    with the columns where the source follows another convention (`other_conventions`)."""
    part = published[(published["benchmark"] == benchmark) & (published["method"] == method)]
    marks = other_conventions(published)
    out = []
    for _, row in part.iterrows():
        out.append(Published(source=row["source"], paper_method=row["paper_method"],
                             values={c.key: _value(row, c) for c in COLUMNS},
                             note="" if pd.isna(row["note"]) else str(row["note"]),
                             conventions=marks.get((benchmark, paper_of(row["source"])), {})))
    return out


def paper_of(source: str) -> str:
    """The publication of a source, without its table: "SRGAN (Ledig et al. 2017), Table 1" -> "SRGAN (Ledig et al. 2017)"."""
    return source.rsplit(", ", 1)[0]


def other_conventions(published: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """(set, paper) -> {column key: why}: the columns whose bicubic value departs from the Y-channel reference's.

    Bicubic is deterministic, so two papers that compute a column alike agree on its bicubic row to
    within CONVENTION_TOLERANCE; a larger gap means another convention (colour space, SSIM window or
    implementation, LR kernel), and every value of that paper's column on that set (any of its tables) is marked.
    """
    bicubic = published[published["method"] == "bicubic"]
    out: dict[tuple[str, str], dict[str, str]] = {}
    for benchmark, rows in bicubic.groupby("benchmark"):
        reference = rows[rows["source"] == Y_CHANNEL_REFERENCE]
        if reference.empty:
            continue
        for _, row in rows[rows["source"] != Y_CHANNEL_REFERENCE].iterrows():
            for column in COLUMNS:
                ours, theirs = _value(row, column), _value(reference.iloc[0], column)
                tolerance = CONVENTION_TOLERANCE.get(column.key)
                if tolerance is None or ours is None or theirs is None or abs(ours - theirs) <= tolerance:
                    continue
                out.setdefault((benchmark, paper_of(row["source"])), {})[column.key] = (
                    f"another {column.label} convention: this paper's bicubic scores {ours:.{column.decimals}f} on "
                    f"{SET_LABELS.get(benchmark, benchmark)}, the Y-channel tables {theirs:.{column.decimals}f} "
                    f"({Y_CHANNEL_REFERENCE})")
    return out


def _ordered(names) -> list[str]:
    return [n for n in strategies.NAMES if n in names] + sorted(n for n in names if n not in strategies.NAMES)


def build_blocks(records: Mapping[str, Mapping], published: pd.DataFrame) -> list[BenchBlock]:
    """One block per (trained dataset, test-only set) of the runs' metrics/<D>-benchmarks.json records."""
    blocks = []
    for dataset, record in records.items():
        for benchmark, scored in (record.get("benchmarks") or {}).items():
            means, spread = scored.get("strategies", {}), scored.get("stats", {})
            rows = []
            for name in _ordered(means):
                intervals = {}
                for col in COLUMNS:
                    cell = (spread.get(name) or {}).get(col.key) or {}
                    low, high = cell.get("ci_low"), cell.get("ci_high")
                    intervals[col.key] = None if low is None or high is None else (low, high)
                rows.append(BenchRow(strategy=name, values={c.key: means[name].get(c.key) for c in COLUMNS},
                                     intervals=intervals, published=published_rows(published, benchmark, name)))
            mark_best(rows)
            blocks.append(BenchBlock(dataset=dataset, benchmark=benchmark, n_images=int(scored.get("n_images", 0)),
                                     rows=rows))
    return blocks


def mark_best(rows: list[BenchRow]) -> None:
    """Per column, mark our best mean as printed (ties all best); n/a cells are never best."""
    for col in COLUMNS:
        values = [row.values.get(col.key) for row in rows]
        for row, best in zip(rows, tables.mark_best(values, col.lower_is_better, col.decimals)):
            row.best[col.key] = best
