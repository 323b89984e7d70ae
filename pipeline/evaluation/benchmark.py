"""The sr_benchmark stage: a dataset's trained models on the test-only sets of `eval.benchmarks`.

Writes results/<D>-benchmarks.csv (one row per set, image, strategy and seed) and
metrics/<D>-benchmarks.json (per set and strategy: means, 95% intervals, seed sd; the weight sources
beside it in metrics/<D>-benchmarks-provenance.json, pipeline.fileio.write_record), scored by
pipeline.evaluation.protocol (the standard SR protocol, whole images). With no set selected (the embedded
default) it writes an empty record at once: torch, LPIPS and the models are only loaded when a
set is scored, so the stage costs the default `dvc repro` nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline import paths
from pipeline.config import benchmark_sets
from pipeline.fileio import atomic_write_text, write_record


def evaluate_benchmarks(params: dict, dataset: str, root: Path = Path(".")) -> dict:
    """Score every trained model of `dataset` on each set of eval.benchmarks; write the CSV and JSON; return the JSON."""
    root = Path(root)
    started = time.perf_counter()
    sets = benchmark_sets(params)
    csv_path, json_path = root / paths.benchmark_results_path(dataset), root / paths.benchmark_metrics_path(dataset)
    if not sets:
        atomic_write_text(csv_path, ",".join(paths.BENCHMARK_KEYS) + "\n")
        result = {"dataset": dataset, "benchmarks": {}, "networks": {}, "seconds": 0.0}
        write_record(json_path, result)
        return result
    from pipeline.evaluation import protocol   # late import: torch, lpips and the models, needed only to score a set

    table, record = protocol.score_sets(params, dataset, sets, root)
    atomic_write_text(csv_path, table.to_csv(index=False, na_rep=""))
    result = {"dataset": dataset, **record, "seconds": round(time.perf_counter() - started, 3)}
    write_record(json_path, result)
    return result
