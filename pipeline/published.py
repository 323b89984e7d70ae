"""The standard SR protocol's table: our scores on Set5 / Set14 / BSD100 beside the published ones.

Pure table logic (no HTML): pipeline.report renders it. The published numbers are vendored in
pipeline/resources/sr_benchmark_results.csv, one row per (test-only set, method, source), keyed
by the strategy name of our registry (mse = SRResNet-MSE, adv,mse = SRGAN-MSE, srgan =
SRGAN-VGG54, ...), with the paper's own name and the table it comes from. A published method we
did not evaluate (or that the registry does not have) is not shown: each of our rows carries the
published rows of the same method, one per source, as the GCN tables show the paper's row.

Columns: PSNR-Y and SSIM-Y (SRGAN 3.1 and the DP paper 4.2: luma, `scale`-pixel border shaved),
LPIPS (the DP paper's; the network is not stated there: compared with our AlexNet LPIPS, the lpips
package's default), and our L2 and DSSIM (the GCN paper's low-level columns, no published value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from pipeline import paths, strategies, tables

SET_LABELS = {"set5": "Set5", "set14": "Set14", "bsd100": "BSD100", "urban100": "Urban100"}


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


def load_published(path: Path = paths.PUBLISHED_SR_RESULTS) -> pd.DataFrame:
    """The vendored published numbers: benchmark, method, paper_method, psnr_y, ssim_y, lpips, source, note."""
    return pd.read_csv(path, dtype={"benchmark": str, "method": str, "paper_method": str, "source": str,
                                    "note": str}, keep_default_na=True)


def published_rows(published: pd.DataFrame, benchmark: str, method: str) -> list[Published]:
    """Every source's numbers for one of our methods on one set (none when no source gives them)."""
    part = published[(published["benchmark"] == benchmark) & (published["method"] == method)]
    out = []
    for _, row in part.iterrows():
        values = {c.key: None if c.published is None or pd.isna(row[c.published]) else float(row[c.published])
                  for c in COLUMNS}
        out.append(Published(source=row["source"], paper_method=row["paper_method"], values=values,
                             note="" if pd.isna(row["note"]) else str(row["note"])))
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
