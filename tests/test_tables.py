"""Table logic of the report: best marks, ranks, n/a cells, paper values, stand-in labels, winner."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.config import load_params
from pipeline.reporting import tables

REPO = Path(__file__).resolve().parents[1]
KEYS = [c.key for c in tables.COLUMNS]


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def paper():
    return tables.load_paper()


def paper_rows() -> dict:
    """The vendored paper CSV read independently of pipeline.reporting.tables."""
    with open(paths.PAPER_RESULTS, newline="") as fh:
        return {(r["dataset"], r["method"]): r for r in csv.DictReader(fh)}


def metrics_for(values: dict[str, dict], squeeze: bool = False, winner: str | None = None) -> dict:
    """A metrics/<ds>.json record: values per strategy for some keys, the rest filled in."""
    strategies = {}
    for name, given in values.items():
        row = {k: 0.5 for k in KEYS}
        row.update(given)
        if not squeeze:
            row["pe_squeeze"] = row["pe_squeeze_lin"] = None
        strategies[name] = row
    record = {"dataset": "x", "n_test": 2, "strategies": strategies, "std": {},
              "networks": {"squeeze": {"available": squeeze, "reason": None if squeeze else "no offline source"},
                           "alex": {"available": True}, "vgg": {"available": True}}}
    if winner:
        record["selection"] = {"winner": winner}
    return record


def test_ranks_are_competition_ranks_with_na_left_out():
    assert tables.ranks([0.3, 0.1, None, 0.1, 0.2], True, 3) == [4, 1, None, 1, 3]
    assert tables.ranks([20.0, 30.5, 25.0], False, 2) == [3, 1, 2]      # higher is better (PSNR)
    assert tables.ranks([None, None], True, 3) == [None, None]


def test_ties_are_judged_as_displayed():
    # 0.1234 and 0.1231 both print as 0.123: both best, as in the paper's bold ties
    assert tables.mark_best([0.1234, 0.1231, 0.2], True, 3) == [True, True, False]
    assert tables.mark_best([0.1236, 0.1231, 0.2], True, 3) == [False, True, False]
    assert tables.mark_best([None, 0.5], True, 3) == [False, True]
    assert tables.mark_best([None, None], False, 2) == [False, False]


def test_paper_dataset_and_stand_in(params):
    assert tables.paper_dataset(params, "sat") == ("sat", False)
    assert tables.paper_dataset(params, "sample-aerial") == ("sat", True)
    assert tables.paper_dataset(params, "sample-natural") == ("imagenet", True)
    assert tables.paper_dataset(params, "sample-texture") == ("dtd", True)
    assert tables.paper_dataset(params, "dogs") == (None, False)


def test_paper_value_lookup(paper):
    rows = paper_rows()
    for (ds, method), row in rows.items():
        for key in ("l2", "ssim_error", "pe_squeeze_lin", "pe_vgg"):
            assert tables.paper_value(paper, ds, method, key) == pytest.approx(float(row[key]))
    assert tables.paper_value(paper, "sat", "bicubic", "l2") is None      # ours only
    assert tables.paper_value(paper, "dogs", "mse", "l2") is None         # not a paper dataset
    assert tables.paper_value(paper, None, "mse", "l2") is None
    assert tables.paper_value(paper, "sat", "mse", "psnr") is None        # not a paper column


def test_paper_selected_follows_the_paper_tables_3_and_4(paper):
    # the paper carries adv,rec into Table 3 (Sat) and Table 4 (ImageNet), dis,rec into Table 4 (DTD)
    assert tables.paper_selected(paper, "sat") == "adv,rec"
    assert tables.paper_selected(paper, "imagenet") == "adv,rec"
    assert tables.paper_selected(paper, "dtd") == "dis,rec"
    assert tables.paper_selected(paper, None) is None


def test_block_cells_best_ranks_diff_and_na(params, paper):
    metrics = metrics_for({
        "mse": {"l2": 0.020, "psnr": 25.0, "pe_alex": 1.9},
        "dis": {"l2": 0.010, "psnr": 27.0, "pe_alex": 1.2},
        "adv,rec": {"l2": 0.0104, "psnr": 26.0, "pe_alex": 1.5},
        "bicubic": {"l2": 0.030, "psnr": 24.0, "pe_alex": 2.0},
    })
    block = tables.build_block("sample-aerial", metrics, ["mse", "dis", "adv,rec", "bicubic", "srgan"], paper, params)
    rows = {r.strategy: r for r in block.rows}
    assert list(rows) == ["mse", "dis", "adv,rec", "bicubic"]
    assert block.missing == ["srgan"] and any("srgan" in n for n in block.notes)
    # L2: 0.010 and 0.0104 both print as 0.010 -> tie for best
    assert [rows[n].cells["l2"].best for n in rows] == [False, True, True, False]
    assert [rows[n].cells["l2"].rank for n in rows] == [3, 1, 1, 4]
    # PSNR: higher is better
    assert [rows[n].cells["psnr"].rank for n in rows] == [3, 1, 2, 4]
    assert rows["dis"].cells["psnr"].best and rows["dis"].cells["psnr"].paper is None
    # the paper's value of the dataset stood in for, and ours minus it
    sat = paper_rows()
    cell = rows["mse"].cells["l2"]
    assert cell.paper == pytest.approx(float(sat[("sat", "mse")]["l2"]))
    assert cell.diff == pytest.approx(0.020 - float(sat[("sat", "mse")]["l2"]))
    assert rows["bicubic"].cells["l2"].paper is None and rows["bicubic"].cells["l2"].diff is None
    assert not rows["bicubic"].in_paper and rows["mse"].in_paper
    # n/a: unavailable network -> no value, no rank, no best mark, the reason kept
    for name, row in rows.items():
        for key in ("pe_squeeze", "pe_squeeze_lin"):
            cell = row.cells[key]
            assert cell.value is None and cell.rank is None and not cell.best
            assert cell.na_reason == "no offline source"
            assert cell.paper is not None or name == "bicubic"   # the paper's own value is still shown
    # the reason is said once per page (na_explanations), not under every block of every table
    assert not any("SqueezeNet" in n or "n/a" in n for n in block.notes)


# The reason pipeline.nets.weights records when no source has SqueezeNet's weights on a machine without network.
OFFLINE_REASON = (
    "no ImageNet weights for squeezenet1_1 (tried cache, torchvision, registry): cache: no cached copy "
    "(weights/squeezenet1_1.pt with a record in weights/manifest.json); torchvision: "
    "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth: [Errno -2] Name or service not known; "
    "registry: no registry package is known to ship squeezenet1_1 ImageNet weights; to provide them offline, "
    "download https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth on another machine and put the "
    "file in data/cache/weights/ (its sha256 is checked)")


def test_na_explanation_is_in_words_a_user_understands():
    text = tables.na_explanation("squeeze", OFFLINE_REASON)
    assert text.startswith("SqueezeNet 1.1: no offline copy of its ImageNet weights, and no network to download them;")
    assert "its columns (Squ, Squ-l) are n/a" in text
    assert "To fill them: download https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth" in text
    assert "Errno" not in text and "tried cache" not in text
    other = tables.na_explanation("vgg", "checksum mismatch: 1234 != 5678")
    assert other.startswith("VGG16: its ImageNet weights could not be loaded") and "1234" not in other


def test_na_explanations_once_per_network_over_the_datasets():
    record = {"networks": {"squeeze": {"available": False, "reason": OFFLINE_REASON}, "alex": {"available": True}}}
    found = tables.na_explanations({"sample-natural": record, "sample-aerial": record})
    assert list(found) == ["squeeze"] and found["squeeze"] == tables.na_explanation("squeeze", OFFLINE_REASON)


def test_stand_in_labels(params, paper):
    metrics = metrics_for({"mse": {}})
    stand_in = tables.build_block("sample-texture", metrics, ["mse"], paper, params)
    assert stand_in.stand_in and stand_in.paper_label == "paper (other data)"
    assert "stand-in for DTD" in stand_in.title
    real_params = copy.deepcopy(params)
    real = tables.build_block("dtd", metrics, ["mse"], paper, real_params)
    assert not real.stand_in and real.paper_label == "paper" and real.title == "DTD"
    other = tables.build_block("dogs", metrics, ["mse"], paper, params)
    assert other.paper_label is None and "no paper values" in other.title
    assert other.rows[0].cells["l2"].paper is None


def test_winner_stored_or_computed_by_the_rule(params, paper):
    values = {"mse": {"pe_alex": 2.0, "pe_vgg": 2.5}, "dis": {"pe_alex": 1.4, "pe_vgg": 2.1},
              "adv,rec": {"pe_alex": 1.3, "pe_vgg": 2.2}, "srgan": {"pe_alex": 1.0, "pe_vgg": 2.05}}
    # no stored selection: the rule (min over methods of the max PE over available networks)
    computed = tables.build_block("sample-aerial", metrics_for(values), list(values), paper, params)
    assert computed.winner == "srgan"
    assert computed.selected == "dis"          # best GCN variant: max PE 2.1 < 2.2
    assert [r.strategy for r in computed.rows if r.winner] == ["srgan"]
    assert [r.strategy for r in computed.rows if r.selected] == ["dis"]
    assert {r.strategy: r.max_pe for r in computed.rows} == pytest.approx(
        {"mse": 2.5, "dis": 2.1, "adv,rec": 2.2, "srgan": 2.05})
    # a winner stored by the evaluate stage is the one shown
    stored = tables.build_block("sample-aerial", metrics_for(values, winner="mse"), list(values), paper, params)
    assert stored.winner == "mse" and [r.strategy for r in stored.rows if r.winner] == ["mse"]


def test_select_method_ignores_missing_scores():
    assert tables.select_method({"a": None, "b": 0.3, "c": 0.2}, ["a", "b", "c"]) == "c"
    assert tables.select_method({"a": None}, ["a", "b"]) is None
    assert tables.max_pe({"pe_alex": 0.2, "pe_vgg": None, "l2": 9.0}) == 0.2
    assert tables.max_pe({"pe_alex": None}) is None


def test_tables_hold_the_papers_rows(params, paper):
    values = {n: {"pe_alex": 1.0 + i / 10, "pe_vgg": 2.0 + i / 10} for i, n in enumerate(tables.ALL_METHODS)}
    metrics = {ds: metrics_for(values) for ds in params["datasets"]}
    t2, t3, t4, t5 = tables.build_tables(params, metrics, paper)
    assert [t.number for t in (t2, t3, t4, t5)] == [2, 3, 4, 5]
    assert [b.dataset for b in t2.blocks] == params["datasets"]
    assert all([r.strategy for r in b.rows] == list(tables.GCN_VARIANTS) for b in t2.blocks)
    # Table 3: the satellite domain only; baselines plus the GCN variant the rule selects (here: dis)
    assert [b.dataset for b in t3.blocks] == ["sample-aerial"]
    assert [r.strategy for r in t3.blocks[0].rows] == ["mse", "adv,mse", "srgan", "dis"]
    assert "the paper selected adv,rec" in t3.blocks[0].notes[0]
    assert [b.dataset for b in t4.blocks] == ["sample-natural", "sample-texture"]
    assert all(b.paper_label == "paper (other data)" for b in t4.blocks)
    # Table 5: every method, ours-only rows have no paper value
    assert all([r.strategy for r in b.rows] == list(tables.ALL_METHODS) for b in t5.blocks)
    for block in t5.blocks:
        for row in block.rows:
            assert (row.cells["l2"].paper is None) == (row.strategy in tables.EXTRA_METHODS)


def test_tables_without_a_paper_domain_say_so(params, paper):
    run = copy.deepcopy(params)
    run["datasets"] = ["sample-texture"]
    t2, t3, t4, t5 = tables.build_tables(run, {"sample-texture": metrics_for({"mse": {}, "dis": {}})}, paper)
    assert t3.blocks == [] and "satellite" in t3.note
    assert [b.dataset for b in t4.blocks] == ["sample-texture"] and t4.note is None


def _paper_max_pe(rows: dict, dataset: str, method: str) -> float:
    return max(float(rows[(dataset, method)][k]) for k in tables.PE_KEYS)


def test_paper_contradicts_its_own_rule_on_sat_only(paper):
    rows = paper_rows()
    # independently from the vendored CSV: on Sat dis,rec has the lowest max PE of the GCN variants
    sat = {m: _paper_max_pe(rows, "sat", m) for m in tables.GCN_VARIANTS}
    assert min(sat, key=sat.get) == "dis,rec" and sat["dis,rec"] == pytest.approx(2.108)
    assert sat["adv,rec"] == pytest.approx(2.115)
    assert "3" in rows[("sat", "adv,rec")]["tables"].split()           # ... yet Table 3 carries adv,rec
    assert tables.paper_selected(paper, "sat") == "adv,rec"
    rule, scores = tables.paper_rule_selected(paper, "sat")
    assert rule == "dis,rec" and scores == pytest.approx(sat)
    note = tables.paper_selection_note(paper, "sat")
    assert "dis,rec" in note and "2.108" in note and "2.115" in note and "Table 3" in note and "faithful" in note
    for ds in ("imagenet", "dtd"):        # there the paper's choice is its rule's choice
        scores = {m: _paper_max_pe(rows, ds, m) for m in tables.GCN_VARIANTS}
        assert tables.paper_rule_selected(paper, ds)[0] == min(scores, key=scores.get) == tables.paper_selected(paper, ds)
        assert tables.paper_selection_note(paper, ds) is None
    assert tables.paper_rule_selected(paper, None) == (None, {}) and tables.paper_selection_note(paper, None) is None


def test_table3_says_that_the_rule_choice_on_sat_is_faithful(params, paper):
    values = {n: {"pe_alex": 1.0 + i / 10, "pe_vgg": 2.0 + i / 10} for i, n in enumerate(tables.ALL_METHODS)}
    values["dis,rec"] = {"pe_alex": 0.1, "pe_vgg": 0.2}          # our rule selects dis,rec, as the paper's rule
    metrics = {ds: metrics_for(values) for ds in params["datasets"]}
    t2, t3, t4, _ = tables.build_tables(params, metrics, paper)
    block = t3.blocks[0]
    assert block.selected == "dis,rec" and block.paper_selected == "adv,rec" and block.paper_rule_selected == "dis,rec"
    assert "the paper selected adv,rec" in block.notes[0] and "faithful" in block.notes[0]
    assert all(b.paper_selection_note is None for b in t4.blocks)
    assert [b.paper_selection_note is not None for b in t2.blocks] == [b.paper_dataset == "sat" for b in t2.blocks]


def test_paper_l2_and_ssim_columns_are_compared_extras_are_not(params, paper):
    compared = {c.key for c in tables.COLUMNS if c.in_paper}
    assert {"l2", "ssim_error"} <= compared and not {"mse", "ssim", "psnr", "psnr_y", "ssim_y"} & compared
    block = tables.build_block("sample-aerial", metrics_for({"mse": {"l2": 0.04, "mse": 0.01, "ssim_y": 0.8}}),
                               ["mse"], paper, params)
    cells = block.rows[0].cells
    assert cells["l2"].paper == pytest.approx(float(paper_rows()[("sat", "mse")]["l2"]))
    assert cells["ssim_error"].paper == pytest.approx(float(paper_rows()[("sat", "mse")]["ssim_error"]))
    assert cells["mse"].paper is None and cells["ssim_y"].paper is None and cells["ssim_y"].value == 0.8
    assert [c.lower_is_better for c in tables.COLUMNS if c.key in ("mse", "ssim_y")] == [True, False]


def _per_image(values: dict[str, list[float]], seeds: int = 1) -> "pd.DataFrame":
    """A per_image.csv table: method -> per-image L2 values (the same for every seed)."""
    import pandas as pd
    rows = [{"id": f"{i:02d}", "strategy": name, "seed": s, "l2": v, "psnr": float("inf")}
            for name, vs in values.items() for s in range(seeds) for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_identical_methods_tie_with_the_best_and_a_clearly_worse_one_does_not(params, paper):
    import numpy as np
    rng = np.random.default_rng(0)
    base = rng.uniform(0.01, 0.02, 12)
    values = {"dis": list(base), "adv": list(base), "mse": list(base + 0.01), "srgan": list(base + 1e-6 * rng.normal(size=12))}
    frame = tables.per_image_frame(_per_image(values, seeds=2), "sample-aerial")
    metrics = metrics_for({n: {"l2": float(np.mean(v))} for n, v in values.items()})
    block = tables.build_block("sample-aerial", metrics, list(values), paper, params, frame=frame)
    cells = {r.strategy: r.cells["l2"] for r in block.rows}
    assert all(cells[n].tested for n in values)
    # dis and adv are identical, srgan differs by noise far below the image spread: all tied with the best
    assert {n for n, c in cells.items() if c.best} == {"dis", "adv", "srgan"}
    assert all(cells[n].rank == 1 for n in ("dis", "adv", "srgan"))
    # mse is worse on every one of the 12 images: separated (Holm p < 0.05), ranked after the tied group
    assert not cells["mse"].best and cells["mse"].rank == 4 and cells["mse"].p_holm < 0.05
    # without the per-image values: ties as printed (mse 0.01 above prints differently)
    plain = tables.build_block("sample-aerial", metrics, list(values), paper, params)
    assert not any(r.cells["l2"].tested for r in plain.rows)
    assert {r.strategy for r in plain.rows if r.cells["l2"].best} == {"dis", "adv", "srgan"}


def test_per_image_frame_drops_na_caps_psnr_and_defaults_the_seed():
    import pandas as pd
    table = pd.DataFrame({"id": ["a", "b"], "strategy": ["mse", "mse"], "l2": [0.1, None],
                          "psnr": [float("inf"), 30.0]})
    frame = tables.per_image_frame(table, "x")
    assert list(frame.columns) == ["dataset", "method", "seed", "image", "metric", "value"]
    assert (frame["seed"] == 0).all() and (frame["dataset"] == "x").all()
    assert sorted(frame[frame["metric"] == "l2"]["image"]) == ["a"]                 # n/a left out
    assert frame[frame["metric"] == "psnr"].set_index("image")["value"].to_dict() == {"a": 100.0, "b": 30.0}


def test_frequency_sentence():
    assert tables.frequency_sentence({"adv,rec": 0.71, "dis,rec": 0.29}, "adv,rec") == \
        "adv,rec wins in 71% of bootstrap resamples (dis,rec 29%)"
    assert tables.frequency_sentence({"dis": 1.0}, "dis", "among the GCN variants") == \
        "dis wins in 100% of bootstrap resamples among the GCN variants"
    assert tables.frequency_sentence({}, "dis") is None and tables.frequency_sentence({"a": 1.0}, None) is None


def test_a_win_among_one_candidate_is_not_printed_as_a_win(params, paper):
    """adv,rec the only GCN variant trained (the CPU reference runs): its "100% among the GCN variants" is no finding."""
    values = {"bicubic": {"pe_alex": 2.0, "pe_vgg": 2.6}, "mse": {"pe_alex": 1.4, "pe_vgg": 2.3},
              "adv,rec": {"pe_alex": 1.3, "pe_vgg": 2.3}}
    record = metrics_for(values)
    record["selection"] = {"winner": "adv,rec", "frequencies": {"adv,rec": 0.8, "mse": 0.2},
                           "gcn_winner": "adv,rec", "gcn_frequencies": {"adv,rec": 1.0}}
    block = tables.build_block("sample-aerial", record, list(values), paper, params)
    assert block.selected == "adv,rec" and block.gcn_candidates == ["adv,rec"]
    assert block.selected_sentence == "adv,rec is the only candidate among the GCN variants: nothing to select, no win"
    assert block.winner_sentence == "adv,rec wins in 80% of bootstrap resamples (mse 20%)"   # 3 candidates: a choice
    record["selection"]["relative"] = {"winner": "mse", "frequencies": {"mse": 0.6, "adv,rec": 0.4},
                                       "gcn_winner": "adv,rec", "gcn_frequencies": {"adv,rec": 1.0},
                                       "deciding_column": {"mse": "pe_vgg", "adv,rec": "pe_alex"}}
    block = tables.build_block("sample-aerial", record, list(values), paper, params)
    assert block.relative_sentence == ("scale-free variant (ours, PE relative to bicubic's): mse wins in 60% of "
                                       "bootstrap resamples (adv,rec 40%); its maximum is VGG for 1 method, Alex for 1 method")
    assert "no win" in block.relative_selected_sentence and "100%" not in block.relative_selected_sentence
    assert tables.frequency_sentence({"dis": 1.0}, "dis", "among the GCN variants", 2) == \
        "dis wins in 100% of bootstrap resamples among the GCN variants"
    table3 = tables.build_tables({**params, "datasets": ["sample-aerial"]}, {"sample-aerial": record}, paper)[1]
    assert table3.number == 3 and "adv,rec is the only candidate" in table3.blocks[0].notes[0]
    assert not any("wins in" in note and "GCN" in note for b in table3.blocks for note in b.notes)


def test_the_rule_names_the_column_that_decides_it_and_why(params, paper):
    """Every method's largest PE is its uncalibrated VGG value, and every VGG value exceeds every other column's:
    the sentence says the rule ranks by VGG alone because of that scale; with mixed maxima it counts them."""
    values = {"bicubic": {"pe_alex": 2.05, "pe_alex_lin": 0.60, "pe_vgg": 2.56, "pe_vgg_lin": 0.48},
              "mse": {"pe_alex": 1.35, "pe_alex_lin": 0.34, "pe_vgg": 2.34, "pe_vgg_lin": 0.43},
              "srgan": {"pe_alex": 1.33, "pe_alex_lin": 0.25, "pe_vgg": 2.45, "pe_vgg_lin": 0.41}}
    used = ["pe_alex", "pe_alex_lin", "pe_vgg", "pe_vgg_lin"]
    assert tables.deciding_columns(values) == {"bicubic": "pe_vgg", "mse": "pe_vgg", "srgan": "pe_vgg"}
    line = tables.rule_column_sentence(values, used)
    assert line.startswith("decided by the VGG column alone") and "2.340 to 2.560" in line and "at most 2.050" in line
    mixed = {**values, "odd": {"pe_alex": 3.0, "pe_alex_lin": 0.3, "pe_vgg": 2.9, "pe_vgg_lin": 0.4}}
    assert tables.rule_column_sentence(mixed, used) == "the maximum PE is VGG for 3 methods, Alex for 1 method"
    assert tables.rule_column_sentence(values, ["pe_alex"]) is None       # one column: nothing decides but it
    block = tables.build_block("sample-aerial", metrics_for(values), list(values), paper, params)
    assert block.rule_lines[0].startswith("the rule's maximum PE is decided by the VGG column alone")
    table5 = tables.build_tables({**params, "datasets": ["sample-aerial"]}, {"sample-aerial": metrics_for(values)},
                                 paper)[3]
    assert table5.blocks[0].notes[0].startswith("the rule's maximum PE is decided by the VGG column alone")


def test_agreement_with_too_few_methods_is_not_counted_as_disagreement(params):
    """The CPU references compare 4 methods with the paper: no column can reach p < 0.05, so the line says
    "too few methods to test", not "agree on 0 of 6 columns"; with 8 methods the count is kept."""
    four = {k: {"tau": 0.33, "p_value": 0.75, "n": 4} for k in ("l2", "ssim_error", "pe_alex", "pe_vgg")}
    line = tables.dataset_verdict("sample-aerial", four)
    assert line.startswith("sample-aerial: too few methods to test") and "0 of" not in line and "0.083" in line
    eight = {**four, "l2": {"tau": 0.8, "p_value": 0.004, "n": 8}}
    assert tables.dataset_verdict("sample-aerial", eight).startswith(
        "sample-aerial: rankings agree with the paper on 1 of 1 columns")
    rows = tables.agreement_rows(params, {"sample-aerial": {"rank_agreement": four, "verdict": "stale text"}})
    row = next(r for r in rows if r["dataset"] == "sample-aerial")
    assert row["cells"]["l2"]["testable"] is False and row["verdict"].startswith("sample-aerial: too few methods")
