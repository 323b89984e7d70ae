"""The paper's Tables 2-5 rebuilt from our metrics, beside the paper's own numbers.

Pure table logic (no HTML, no figures): which methods and datasets each table holds, the
paper's value for a cell and our difference to it, the best value per column (bold in the
paper), ranks per column, n/a cells for perceptual networks whose weights were unavailable,
the selection rule's winner, and the labels of stand-in datasets. pipeline.reporting.report renders it.

Conventions:
- A cell is a mean over seeds and test images with its 95% interval and seed sd (the evaluate
  stage's ``stats``, pipeline.evaluation.stats). Best and ranks are taken per column within one dataset
  block: with the per-image values (results/<ds>/per_image.csv) every method is tested against
  the block's best (paired Wilcoxon over test images, Holm-corrected, alpha 0.05) and those the
  test cannot separate from it are all best (bold, rank 1): ties shown as ties. Without
  per-image values, values printed alike tie, as in the paper's tables. Ranks are competition
  ranks (1, 1, 3). n/a values take no rank.
- Differences are ours minus the paper's; for a stand-in dataset the paper's value comes from
  the paper's dataset it replaces, and is labelled "paper (other data)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.evaluation import stats
from pipeline.nets import strategies

PAPER_DATASETS = ("imagenet", "dtd", "sat")
PAPER_DATASET_LABELS = {"imagenet": "ImageNet", "dtd": "DTD", "sat": "Sat"}
PAPER_TEST_IMAGES = 1000
PAPER_TRAIN_IMAGES = {"imagenet": 70000, "dtd": 5600, "sat": 235183}  # GCN paper 4.3.1

# The rows of each table, from the registry's table roles (in registry order, the paper's row order):
# Table 2 lists the GCN variants, Tables 3-4 the baselines first, Table 5 every method.
GCN_VARIANTS = strategies.with_role("gcn")
BASELINES = strategies.with_role("baseline")
EXTRA_METHODS = strategies.with_role("extra")  # ours or other documents': the paper has no row for them
ALL_METHODS = BASELINES + GCN_VARIANTS + EXTRA_METHODS

NETWORK_LABELS = {"squeeze": "SqueezeNet", "alex": "AlexNet", "vgg": "VGG"}
RELATIVE_RULE = ("scale-free variant of the selection rule (ours, not the paper's): the method with the lowest maximum "
                 "over networks of its PE divided by bicubic's PE on the same images")


@dataclass(frozen=True)
class Column:
    """One metric column: its key in metrics/<ds>.json and how the paper prints it."""

    key: str
    label: str
    group: str
    lower_is_better: bool
    decimals: int
    in_paper: bool
    network: str | None = None
    help: str = ""


COLUMNS: tuple[Column, ...] = (
    # The paper's L2 and SSIM on the paper's own scale (Zhang et al.'s code, colorspace RGB):
    # bench/metric-convention.md has the evidence.
    Column("l2", "L2", "Low-level", True, 3, True,
           help="the paper's L2: mean squared error of RGB in [-1,1] (= 4 x MSE of RGB in [0,1])"),
    Column("ssim_error", "SSIM", "Low-level", True, 3, True,
           help="the paper's SSIM: DSSIM (1 - SSIM) / 2, 7x7 uniform window, RGB (lower is better)"),
    Column("pe_squeeze", "Squ", "Perceptual", True, 3, True, "squeeze", "LPIPS SqueezeNet, uncalibrated"),
    Column("pe_squeeze_lin", "Squ-l", "Perceptual", True, 3, True, "squeeze", "LPIPS SqueezeNet, calibrated (lin)"),
    Column("pe_alex", "Alex", "Perceptual", True, 3, True, "alex", "LPIPS AlexNet, uncalibrated"),
    Column("pe_alex_lin", "Alex-l", "Perceptual", True, 3, True, "alex", "LPIPS AlexNet, calibrated (lin)"),
    Column("pe_vgg", "VGG", "Perceptual", True, 3, True, "vgg", "LPIPS VGG16, uncalibrated"),
    Column("pe_vgg_lin", "VGG-l", "Perceptual", True, 3, True, "vgg", "LPIPS VGG16, calibrated (lin)"),
    Column("mse", "MSE", "Extra (not in the paper)", True, 4, False, help="mean squared error of RGB in [0,1]"),
    Column("psnr", "PSNR", "Extra (not in the paper)", False, 2, False, help="dB on RGB (higher is better)"),
    Column("psnr_y", "PSNR-Y", "Extra (not in the paper)", False, 2, False,
           help="dB on the Y channel, border of `scale` pixels shaved (higher is better)"),
    Column("ssim", "SSIM", "Extra (not in the paper)", False, 3, False,
           help="SSIM of Wang et al., Gaussian 11x11 window, RGB (higher is better)"),
    Column("ssim_y", "SSIM-Y", "Extra (not in the paper)", False, 3, False,
           help="SSIM on the Y channel, Gaussian 11x11 window, border of `scale` pixels shaved (higher is better)"),
)
PE_KEYS = tuple(c.key for c in COLUMNS if c.network)
PSNR_CAP = 100.0    # = pipeline.evaluation.metrics.PSNR_CAP (not imported: that module pulls in scikit-image)


def method_label(name: str) -> str:
    """The name of a method in tables and figures: `Psisr/dis,rec`, `SRGAN`, `Bicubic` (the registry's label)."""
    return strategies.label(name)


@dataclass
class Cell:
    """One metric of one method on one dataset: ours, the paper's, best mark and rank."""

    value: float | None
    paper: float | None = None
    std: float | None = None
    na_reason: str | None = None
    best: bool = False
    rank: int | None = None
    ci_low: float | None = None      # 95% interval of the mean (seeds and images resampled)
    ci_high: float | None = None
    seed_sd: float | None = None     # sd of the per-seed means (None with one seed)
    p_holm: float | None = None      # against the block's best; None for the best or untested
    tested: bool = False             # best/rank come from the paired test (else: as displayed)

    @property
    def available(self) -> bool:
        return self.value is not None

    @property
    def diff(self) -> float | None:
        if self.value is None or self.paper is None:
            return None
        return self.value - self.paper


@dataclass
class Row:
    strategy: str
    cells: dict[str, Cell]
    in_paper: bool = False
    winner: bool = False      # the selection rule's winner on this dataset
    selected: bool = False    # the GCN variant the rule selects (Tables 3-4 use it)
    max_pe: float | None = None

    @property
    def label(self) -> str:
        return method_label(self.strategy)


@dataclass
class Block:
    """The rows of one dataset inside a table."""

    dataset: str
    paper_dataset: str | None
    stand_in: bool
    rows: list[Row]
    missing: list[str] = field(default_factory=list)   # the table's methods this run did not evaluate
    winner: str | None = None
    selected: str | None = None
    paper_selected: str | None = None
    paper_rule_selected: str | None = None       # what the paper's rule gives on the paper's own Table 2
    paper_selection_note: str | None = None      # set where the paper's choice contradicts its own rule
    notes: list[str] = field(default_factory=list)
    frequencies: dict[str, float] = field(default_factory=dict)      # rule winner shares over resamples
    gcn_frequencies: dict[str, float] = field(default_factory=dict)  # the same among the GCN variants
    n_seeds: int = 1
    candidates: list[str] = field(default_factory=list)         # the methods the rule chooses among
    gcn_candidates: list[str] = field(default_factory=list)     # the GCN variants it chooses among
    rule_column: str | None = None                               # which column decides the maximum, and why
    relative: dict = field(default_factory=dict)                 # the evaluate stage's selection.relative

    @property
    def winner_sentence(self) -> str | None:
        """E.g. "adv,rec wins in 71% of bootstrap resamples (dis,rec 29%)"; no win among a single candidate."""
        return frequency_sentence(self.frequencies, self.winner, candidates=len(self.candidates))

    @property
    def selected_sentence(self) -> str | None:
        return frequency_sentence(self.gcn_frequencies, self.selected, "among the GCN variants",
                                  len(self.gcn_candidates))

    @property
    def relative_sentence(self) -> str | None:
        """Our scale-free variant over every method, e.g. "scale-free variant (ours): adv wins in 64% ..."."""
        text = frequency_sentence(self.relative.get("frequencies") or {}, self.relative.get("winner"),
                                  candidates=len(self.candidates))
        return self._relative(text, self.candidates)

    @property
    def rule_lines(self) -> list[str]:
        """The lines beside the rule over every method: the column deciding its maximum, our scale-free variant."""
        return rule_notes(self, self.relative_sentence)

    @property
    def relative_selected_sentence(self) -> str | None:
        text = frequency_sentence(self.relative.get("gcn_frequencies") or {}, self.relative.get("gcn_winner"),
                                  "among the GCN variants", len(self.gcn_candidates))
        return self._relative(text, self.gcn_candidates)

    def _relative(self, text: str | None, names: list[str]) -> str | None:
        """The scale-free variant's sentence, with the columns where each of `names` gains least over bicubic."""
        if not text:
            return None
        deciding = {n: c for n, c in (self.relative.get("deciding_column") or {}).items() if n in names}
        where = f"; its maximum is {column_counts(deciding)}" if deciding else ""
        return f"scale-free variant (ours, PE relative to bicubic's): {text}{where}"

    @property
    def paper_label(self) -> str | None:
        """Heading of the paper's values: "paper", "paper (other data)", or None (no paper values)."""
        if self.paper_dataset is None:
            return None
        return "paper (other data)" if self.stand_in else "paper"

    @property
    def paper_name(self) -> str | None:
        """The paper's name of the dataset compared with (ImageNet, DTD, Sat)."""
        return PAPER_DATASET_LABELS.get(self.paper_dataset) if self.paper_dataset else None

    @property
    def title(self) -> str:
        if self.paper_dataset is None:
            return f"{self.dataset} (not in the paper: no paper values)"
        name = PAPER_DATASET_LABELS[self.paper_dataset]
        if self.stand_in:
            return f"{self.dataset}: stand-in for {name} (paper values are on other data)"
        return name


@dataclass
class Table:
    number: int
    title: str
    caption: str
    blocks: list[Block]
    columns: tuple[Column, ...] = COLUMNS
    note: str | None = None

    @property
    def groups(self) -> list[tuple[str, int]]:
        """Column groups and their spans, for the two-row header."""
        out: list[tuple[str, int]] = []
        for col in self.columns:
            if out and out[-1][0] == col.group:
                out[-1] = (col.group, out[-1][1] + 1)
            else:
                out.append((col.group, 1))
        return out


def frequency_sentence(frequencies: Mapping[str, float], winner: str | None, among: str = "",
                       candidates: int | None = None) -> str | None:
    """How often the rule's winner wins on bootstrap resamples of seeds and images, and who else wins.

    With a single candidate (`candidates` < 2) there is no choice, so no win is claimed.
    """
    if candidates is not None and candidates < 2 and winner is not None:
        return f"{winner} is the only candidate{' ' + among if among else ''}: nothing to select, no win"
    if not frequencies or winner is None:
        return None
    share = frequencies.get(winner, 0.0)
    others = ", ".join(f"{m} {f:.0%}" for m, f in frequencies.items() if m != winner)
    text = f"{winner} wins in {share:.0%} of bootstrap resamples{' ' + among if among else ''}"
    return text + (f" ({others})" if others else "")


def per_image_frame(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """results/<ds>/per_image.csv (id, strategy, seed, metric columns) in pipeline.evaluation.stats' long form.

    n/a (empty) and non-finite values are dropped; PSNR is capped at 100 dB as in the means
    (pipeline.evaluation.metrics.PSNR_CAP), so an identical pair counts as a number. A table without a seed
    column is one seed (0).
    """
    table = table.copy()
    if "seed" not in table.columns:
        table["seed"] = 0
    value_columns = [c.key for c in COLUMNS if c.key in table.columns]
    frame = table.melt(id_vars=["id", "strategy", "seed"], value_vars=value_columns, var_name="metric",
                       value_name="value").rename(columns={"id": "image", "strategy": "method"})
    frame["dataset"] = dataset
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    psnr = frame["metric"].str.startswith("psnr")
    frame.loc[psnr, "value"] = frame.loc[psnr, "value"].clip(upper=PSNR_CAP)
    frame = frame[np.isfinite(frame["value"])]
    return frame[list(stats.LONG_COLUMNS)]


def column_arrays(frame: pd.DataFrame, dataset: str, metric: str,
                  methods: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """stats.to_arrays, leaving out a method with a hole in its seeds x images grid (a partly n/a column)."""
    arrays = stats.to_arrays(frame, dataset, metric, methods)
    return {name: a for name, a in arrays.items() if a.size and np.isfinite(a).all()}


def load_paper(path: Path = paths.PAPER_RESULTS) -> pd.DataFrame:
    """The paper's published numbers (Tables 2-5), one row per dataset and method."""
    frame = pd.read_csv(path, dtype={"dataset": str, "method": str, "tables": str})
    return frame.set_index(["dataset", "method"]).sort_index()


def paper_dataset(params: Mapping, dataset: str) -> tuple[str | None, bool]:
    """The paper's dataset whose numbers a dataset is compared with, and whether it is a stand-in."""
    spec = params.get("data", {}).get(dataset, {})
    if dataset in PAPER_DATASETS:   # a paper dataset downloaded as a stand-in (sources.mark_stand_ins)
        return dataset, spec.get("stand_in_for") == dataset
    target = spec.get("stand_in_for")
    if target in PAPER_DATASETS:
        return target, True
    return None, False


def paper_value(paper: pd.DataFrame, dataset: str | None, method: str, column: str) -> float | None:
    """The paper's value of one cell, or None where the paper has no such row or column."""
    if dataset is None or column not in paper.columns or (dataset, method) not in paper.index:
        return None
    value = paper.loc[(dataset, method), column]
    return None if pd.isna(value) else float(value)


def paper_selected(paper: pd.DataFrame, dataset: str | None) -> str | None:
    """The GCN variant the paper carried from Table 2 into Table 3 or 4 for a dataset."""
    if dataset is None or dataset not in paper.index.get_level_values(0):
        return None
    rows = paper.loc[dataset]
    for method in GCN_VARIANTS:
        if method in rows.index and set(str(rows.loc[method, "tables"]).split()) & {"3", "4"}:
            return method
    return None


def paper_rule_selected(paper: pd.DataFrame, dataset: str | None) -> tuple[str | None, dict[str, float]]:
    """The GCN variant the paper's own Table 2 numbers select by its rule, and each variant's max PE."""
    if dataset is None or dataset not in paper.index.get_level_values(0):
        return None, {}
    rows = paper.loc[dataset]
    scores = {m: max_pe(rows.loc[m].to_dict()) for m in GCN_VARIANTS if m in rows.index}
    return select_method(scores, GCN_VARIANTS), scores


def paper_selection_note(paper: pd.DataFrame, dataset: str | None) -> str | None:
    """A note where the paper carried into Table 3/4 another variant than its rule selects from its Table 2.

    On Sat the rule (lowest maximum PE) gives dis,rec (2.108) over adv,rec (2.115), yet the paper's
    Table 3 carries adv,rec: a run whose rule picks dis,rec there agrees with the paper's rule.
    """
    carried = paper_selected(paper, dataset)
    rule, scores = paper_rule_selected(paper, dataset)
    if carried is None or rule is None or carried == rule:
        return None
    return (f"the paper's own Table 2 numbers select {rule} by its rule (max PE {scores[rule]:.3f} vs "
            f"{scores[carried]:.3f} for {carried}), yet the paper carried {carried} into Table "
            f"{'3' if dataset == 'sat' else '4'}: matching the rule's {rule} here is faithful to the paper's rule")


def ranks(values: Iterable[float | None], lower_is_better: bool, decimals: int) -> list[int | None]:
    """Competition ranks (1 = best; ties share the lower rank) of values as displayed; None stays None."""
    series = pd.Series([float("nan") if v is None else float(v) for v in values], dtype="float64")
    ranked = series.round(decimals).rank(method="min", ascending=lower_is_better, na_option="keep")
    return [None if pd.isna(r) else int(r) for r in ranked]


def mark_best(values: Iterable[float | None], lower_is_better: bool, decimals: int) -> list[bool]:
    """True for every value that is best as displayed (all tied best values); False for n/a."""
    return [r == 1 for r in ranks(values, lower_is_better, decimals)]


def max_pe(values: Mapping[str, float | None]) -> float | None:
    """The selection rule's score of a method: its largest perceptual error over the available networks."""
    available = [values[k] for k in PE_KEYS if values.get(k) is not None]
    return max(available) if available else None


def deciding_columns(means: Mapping[str, Mapping[str, float | None]]) -> dict[str, str]:
    """Per method, the PE column giving its maximum PE: the one column the paper's rule ranks it by."""
    out = {}
    for name, row in means.items():
        present = {k: v for k, v in row.items() if k in PE_KEYS and v is not None}
        if present:
            out[name] = max(present, key=present.get)
    return out


def column_counts(deciding: Mapping[str, str]) -> str:
    """How many methods each column decides, e.g. "VGG for 3 methods, Alex for 1 method" (most first)."""
    labels = {c.key: c.label for c in COLUMNS}
    counts = pd.Series(list(deciding.values()), dtype=object).value_counts()
    return ", ".join(f"{labels[k]} for {n} method{'s' if n > 1 else ''}" for k, n in counts.items())


def rule_column_sentence(means: Mapping[str, Mapping[str, float | None]], used: Iterable[str]) -> str | None:
    """Which column decides the maximum PE of the rule and why, e.g. "max PE is VGG for every method: ...".

    ``means``: method -> column -> mean; ``used``: the PE columns the rule takes the maximum over.
    Names the scale: the deciding column's range over the methods against the other columns' largest value.
    """
    used = [k for k in used if k in PE_KEYS]
    rows = {name: {k: row.get(k) for k in used} for name, row in means.items()}
    deciding = deciding_columns(rows)
    if len(used) < 2 or not deciding:
        return None
    labels = {c.key: c.label for c in COLUMNS}
    if len(set(deciding.values())) > 1:
        return f"the maximum PE is {column_counts(deciding)}"
    column = next(iter(deciding.values()))
    own = [row[column] for row in rows.values() if row.get(column) is not None]
    others = [v for row in rows.values() for k, v in row.items() if k != column and v is not None]
    scale = (f"every {labels[column]} value ({min(own):.3f} to {max(own):.3f}) exceeds every other column's "
             f"(at most {max(others):.3f})" if min(own) > max(others) else
             f"{labels[column]} is each method's largest PE ({min(own):.3f} to {max(own):.3f})")
    return (f"decided by the {labels[column]} column alone ({next(c.help for c in COLUMNS if c.key == column)}): "
            f"{scale}; the networks' distances are not on a common scale, so the rule ranks the methods by "
            f"{labels[column]} only")


def rule_scores(metrics: Mapping) -> dict[str, float | None]:
    """max PE per strategy: as stored by the evaluate stage, else computed from the means."""
    stored = (metrics.get("selection") or {}).get("max_pe") or {}
    return {name: stored.get(name, max_pe(values)) for name, values in metrics.get("strategies", {}).items()}


def select_method(scores: Mapping[str, float | None], candidates: Iterable[str]) -> str | None:
    """The candidate minimising the maximum PE (the paper's rule); ties go to the earlier candidate."""
    best, best_score = None, None
    for name in candidates:
        score = scores.get(name)
        if score is not None and (best_score is None or score < best_score):
            best, best_score = name, score
    return best


def na_reasons(metrics: Mapping) -> dict[str, str]:
    """Why each unavailable perceptual network has no values (network -> reason)."""
    out = {}
    for net, record in (metrics.get("networks") or {}).items():
        if not record.get("available", False):
            out[net] = record.get("reason") or "weights unavailable"
    return out


# The ImageNet networks behind the LPIPS columns, by their full names (for the n/a sentences).
NETWORK_NAMES = {"squeeze": "SqueezeNet 1.1", "alex": "AlexNet", "vgg": "VGG16"}
# Words of a failed download in a weights reason (pipeline.nets.weights): the machine had no network.
_OFFLINE = ("Name or service not known", "Temporary failure in name resolution", "Network is unreachable",
            "timed out", "urlopen error")


def na_explanation(network: str, reason: str) -> str:
    """Why a network's columns are n/a, in a user's words, with the way to fill them when the reason says it.

    E.g. "SqueezeNet 1.1: no offline copy of its ImageNet weights, and no network to download them;
    its columns (Squ, Squ-l) are n/a. To fill them: download ... and put the file in data/cache/weights/".
    The technical reason (every source tried) stays in the run card.
    """
    name = NETWORK_NAMES.get(network, network)
    labels = ", ".join(c.label for c in COLUMNS if c.network == network)
    if "no cached copy" in reason or "no offline source" in reason:
        what = "no offline copy of its ImageNet weights"
        if any(word in reason for word in _OFFLINE):
            what += ", and no network to download them"
    else:
        what = "its ImageNet weights could not be loaded (the run card's weight sources say why)"
    text = f"{name}: {what}; its columns ({labels}) are n/a."
    _, hint, how = reason.partition("to provide them offline, ")
    return text + (f" To fill them: {how.rstrip('.')}, then run the pipeline again." if hint else "")


def na_explanations(metrics: Mapping[str, Mapping]) -> dict[str, str]:
    """network -> `na_explanation`, once for every network unavailable in any dataset of a run
    (metrics: dataset -> metrics/<ds>.json content); the first dataset's reason is the one told."""
    out: dict[str, str] = {}
    for record in metrics.values():
        for network, reason in na_reasons(record).items():
            out.setdefault(network, na_explanation(network, reason))
    return out


def build_block(dataset: str, metrics: Mapping, methods: Iterable[str], paper: pd.DataFrame,
                params: Mapping, columns: tuple[Column, ...] = COLUMNS, frame: pd.DataFrame | None = None) -> Block:
    """One dataset's rows of a table: cells with intervals and paper values, best marks, ranks, winner.

    ``frame``: the dataset's per-image values in long form (``per_image_frame``); with it, best and
    ranks come from ``stats.compare_to_best`` among this block's methods, else from the values as printed.
    """
    paper_ds, stand_in = paper_dataset(params, dataset)
    strategies = metrics.get("strategies", {})
    std = metrics.get("std", {}) or {}
    intervals = metrics.get("stats", {}) or {}
    reasons = na_reasons(metrics)
    scores = rule_scores(metrics)
    rule = metrics.get("selection") or {}
    used = rule.get("networks_used") or [k for k in PE_KEYS if any(row.get(k) is not None for row in strategies.values())]
    winner = rule.get("winner") or select_method(scores, strategies)
    selected = select_method(scores, GCN_VARIANTS)
    methods = list(methods)
    rows = []
    for name in methods:
        if name not in strategies:
            continue
        cells = {}
        for col in columns:
            value = strategies[name].get(col.key)
            reason = None
            if value is None:
                reason = reasons.get(col.network) if col.network else None
                reason = reason or "not computed by the evaluate stage"
            spread = (intervals.get(name) or {}).get(col.key) or {}
            cells[col.key] = Cell(
                value=None if value is None else float(value),
                paper=paper_value(paper, paper_ds, name, col.key) if col.in_paper else None,
                std=(std.get(name) or {}).get(col.key),
                na_reason=reason,
                ci_low=spread.get("ci_low"), ci_high=spread.get("ci_high"), seed_sd=spread.get("seed_sd"),
            )
        rows.append(Row(strategy=name, cells=cells, in_paper=paper_ds is not None and (paper_ds, name) in paper.index,
                        winner=name == winner, selected=name == selected, max_pe=scores.get(name)))
    for col in columns:
        column_cells = {row.strategy: row.cells[col.key] for row in rows}
        present = [n for n, c in column_cells.items() if c.available]
        arrays = column_arrays(frame, dataset, col.key, present) if frame is not None else {}
        if arrays and set(arrays) == set(present):
            for name, result in stats.compare_to_best(arrays, col.lower_is_better).items():
                cell = column_cells[name]
                cell.rank, cell.best, cell.p_holm, cell.tested = (result["rank"], bool(result["tied_with_best"]),
                                                                  result["p_holm"], True)
        else:
            values = [c.value for c in column_cells.values()]
            for cell, rank in zip(column_cells.values(), ranks(values, col.lower_is_better, col.decimals)):
                cell.rank, cell.best = rank, rank == 1
    block = Block(dataset=dataset, paper_dataset=paper_ds, stand_in=stand_in, rows=rows,
                  missing=[m for m in methods if m not in strategies], winner=winner, selected=selected,
                  paper_selected=paper_selected(paper, paper_ds),
                  paper_rule_selected=paper_rule_selected(paper, paper_ds)[0],
                  paper_selection_note=paper_selection_note(paper, paper_ds),
                  frequencies=dict(rule.get("frequencies") or {}),
                  gcn_frequencies=dict(rule.get("gcn_frequencies") or {}),
                  n_seeds=int(metrics.get("n_seeds") or 1),
                  candidates=[m for m in strategies if scores.get(m) is not None],
                  gcn_candidates=[m for m in GCN_VARIANTS if scores.get(m) is not None],
                  rule_column=rule_column_sentence(strategies, used),
                  relative=dict(rule.get("relative") or {}))
    # the n/a reasons are said once per page (na_explanations), not under every block
    if block.missing:
        block.notes.append("not evaluated in this run: " + ", ".join(block.missing))
    return block


def _domain(params: Mapping, dataset: str) -> str | None:
    return paper_dataset(params, dataset)[0]


def build_tables(params: Mapping, metrics: Mapping[str, Mapping], paper: pd.DataFrame,
                 frames: Mapping[str, pd.DataFrame] | None = None) -> list[Table]:
    """Tables 2-5 for the datasets of a run (metrics: dataset -> metrics/<ds>.json content;
    frames: dataset -> per-image values in long form, for the ties with the best)."""
    datasets = [d for d in params["datasets"] if d in metrics]
    frames = frames or {}

    def build(ds: str, methods: Iterable[str]) -> Block:
        return build_block(ds, metrics[ds], methods, paper, params, frame=frames.get(ds))

    def selected_rows(ds: str, baselines: tuple[str, ...]) -> list[str]:
        chosen = select_method(rule_scores(metrics[ds]), GCN_VARIANTS)
        return list(baselines) + ([chosen] if chosen else [])

    def note_selection(block: Block) -> Block:
        ours = block.selected or "none"
        paper_sel = block.paper_selected
        text = f"selected GCN method (lowest maximum PE in Table 2): {ours}"
        if block.selected_sentence:
            text += f" ({block.selected_sentence})"
        if paper_sel:
            text += f"; the paper selected {paper_sel}"
        if block.paper_selection_note:
            text += f" ({block.paper_selection_note})"
        block.notes[:0] = [text] + rule_notes(block, block.relative_selected_sentence)
        return block

    def note_rule(block: Block, sentence: str | None, what: str, relative: str | None) -> Block:
        block.notes[:0] = ([f"{what}: {sentence}"] if sentence else []) + rule_notes(block, relative)
        return block

    t2 = Table(2, "The GCN variants on each dataset",
               "Results of the GCN learning strategies in terms of the low-level metrics (L2 and SSIM error) "
               "and the perceptual error on six LPIPS networks (paper's Table 2).",
               [note_rule(b, b.selected_sentence, "selection rule (lowest maximum PE) among these variants",
                          b.relative_selected_sentence) for b in (build(d, GCN_VARIANTS) for d in datasets)])
    sat = [d for d in datasets if _domain(params, d) == "sat"]
    t3 = Table(3, "The satellite domain: the selected GCN method against the baselines and SRGAN",
               "MSE, adversarial MSE, SRGAN and the GCN method selected by Table 2 on the satellite domain "
               "(paper's Table 3).",
               [note_selection(build(d, selected_rows(d, BASELINES))) for d in sat],
               note=None if sat else "No dataset of this run is, or stands in for, the satellite domain (Sat).")
    near = [d for d in datasets if _domain(params, d) in ("imagenet", "dtd")]
    t4 = Table(4, "ImageNet and DTD: the selected GCN method against the baselines and SRGAN",
               "MSE, adversarial MSE, SRGAN and the GCN method selected by Table 2 on ImageNet and DTD "
               "(paper's Table 4).",
               [note_selection(build(d, selected_rows(d, BASELINES))) for d in near],
               note=None if near else "No dataset of this run is, or stands in for, ImageNet or DTD.")
    t5 = Table(5, "Every method on every dataset",
               f"All methods, including those the paper has no row for ({', '.join(EXTRA_METHODS)}: paper cell "
               "\u2014) (paper's Table 5).",
               [note_rule(b, b.winner_sentence, "selection rule (lowest maximum PE) over every method",
                          b.relative_sentence) for b in (build(d, ALL_METHODS) for d in datasets)])
    return [t2, t3, t4, t5]


def rule_notes(block: Block, relative: str | None) -> list[str]:
    """The lines printed beside a selection rule: the column deciding its maximum, and our scale-free variant."""
    notes = [f"the rule's maximum PE is {block.rule_column}"] if block.rule_column else []
    return notes + ([relative] if relative else [])


def agreement_rows(params: Mapping, metrics: Mapping[str, Mapping]) -> list[dict]:
    """Per dataset: the evaluate stage's Kendall tau against the paper per in-paper column, and the verdict.

    Each cell gains ``testable`` (stats.testable: whether n methods can reach p < ALPHA at all) and the
    verdict is recomputed from the cells (`dataset_verdict`), so a record of any version reads the same.
    """
    out = []
    for ds in params["datasets"]:
        record = metrics.get(ds) or {}
        paper_ds, stand_in = paper_dataset(params, ds)
        agreement = record.get("rank_agreement") or {}
        cells = {c.key: None if agreement.get(c.key) is None else
                 {**agreement[c.key], "testable": stats.testable(int(agreement[c.key].get("n") or 0))}
                 for c in COLUMNS if c.in_paper}
        out.append({"dataset": ds, "paper_dataset": PAPER_DATASET_LABELS.get(paper_ds) if paper_ds else None,
                    "stand_in": stand_in, "cells": cells,
                    "verdict": dataset_verdict(ds, agreement) if agreement else record.get("verdict")})
    return out


def dataset_verdict(dataset: str, agreement: Mapping[str, Mapping]) -> str:
    """One line per dataset: in how many testable columns the ranking agrees with the paper's, and the best column.

    Columns with too few methods for Kendall's test to reach p < ALPHA (stats.testable) are not counted
    as disagreeing: with none testable the line says "too few methods to test".
    """
    if not agreement:
        return f"{dataset}: not a paper dataset (no paper values to compare rankings with)"
    labels = {c.key: c.label for c in COLUMNS}
    computed = {k: v for k, v in agreement.items() if v["tau"] is not None and not math.isnan(v["tau"])}
    if not computed:
        return f"{dataset}: rankings cannot be compared with the paper (fewer than 3 methods with values in both)"
    tested = {k: v for k, v in computed.items() if stats.testable(int(v["n"]))}
    if not tested:
        n = max(int(v["n"]) for v in computed.values())
        return (f"{dataset}: too few methods to test the agreement with the paper ({n} methods: Kendall's test "
                f"cannot reach p < {stats.ALPHA}, its smallest p is {stats.min_kendall_p(n):.2g})")
    agree = [k for k, v in tested.items() if v["tau"] > 0 and v["p_value"] < stats.ALPHA]
    best = max(tested, key=lambda k: tested[k]["tau"])
    top = tested[best]
    return (f"{dataset}: rankings agree with the paper on {len(agree)} of {len(tested)} columns "
            f"(tau > 0, p < {stats.ALPHA}); best {labels[best]}: tau {top['tau']:.2f}, p {top['p_value']:.2g}, "
            f"{top['n']} methods")
