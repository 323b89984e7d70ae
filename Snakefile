# The same DAG as dvc.yaml, driven by Snakemake at a finer grain: one training job per
# dataset x strategy x seed, so `snakemake -c N` (or a cluster profile, see profiles/slurm) runs them in
# parallel. Every rule calls the same stage CLI as dvc.yaml, with the same parameters file.
#
#   snakemake -c 2                                 # the parameters in params.yaml
#   snakemake -c 2 --config params=other.yaml      # another parameters file
#
# What reruns, as with `dvc repro`: dvc.yaml is read here and is the one source of truth for what
# each stage depends on. A rule's `params` are the parameter sections its dvc stage declares
# (serialized), so Snakemake's default rerun triggers (mtime params input software-env code)
# rerun exactly the jobs whose sections changed, and their downstream jobs; its code files
# (stages/*.py, pipeline/*.py of the dvc stage's deps) are inputs, so editing a module reruns the
# stages that run it. The report depends on everything dvc's report stage depends on (data, models,
# results), none of which is committed, so a fresh clone runs the whole pipeline even though
# reports/index.html and metrics/*.json are in git. Each job's stdout and stderr go to logs/.
import json
from pathlib import Path

import yaml

from pipeline import paths
from pipeline.config import benchmark_sets, load_params, seed_list
from pipeline.fileio import provenance_path
from pipeline.nets import strategies

PARAMS = config.get("params", "params.yaml")
P = load_params(PARAMS)
# The file name reaches the commands as a Path: Snakemake does not record non-builtin params, so
# switching to another parameters file reruns only the jobs whose sections differ.
PARAMS_FILE = Path(PARAMS)
ENV = "envs/gcn-bench.yaml"
DATASETS = P["datasets"]
BENCHMARKS = benchmark_sets(P)   # test-only sets every trained model is also scored on (eval.benchmarks)
# one training job per strategy that trains a generator and seed (bicubic needs none: evaluate builds it)
SLUGS = [strategies.slug(s) for s in strategies.select(P["strategy"]) if strategies.get(s).trains_generator]
SEEDS = seed_list(P["train"])
TRAINED = lambda ds: [f"{paths.model_dir(ds, slug, seed)}/config.json" for slug in SLUGS for seed in SEEDS]

with open(workflow.source_path("dvc.yaml")) as handle:
    DVC = yaml.safe_load(handle)["stages"]


def dvc_stage(name):
    stage = DVC[name]
    return stage.get("do", stage)   # foreach stages keep their body under `do`


def dvc_code(name):
    """The code files among a dvc stage's deps (data deps are the rules' inputs below)."""
    return [d for d in dvc_stage(name)["deps"] if d.startswith(("stages/", "pipeline/"))]


def dvc_params(name, dataset="", skip=()):
    """JSON of the parameter sections a dvc stage declares, with their current values.

    `skip` names sections or keys left out (e.g. `train.seeds`: each job trains one seed).
    """
    values = {}
    for key in dvc_stage(name)["params"]:
        key = key.replace("${item}", dataset)
        if key in skip:
            continue
        value = P
        for part in key.split("."):
            value = value[part]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in skip}
        values[key] = value
    return json.dumps(values, sort_keys=True)


wildcard_constraints:
    dataset="|".join(DATASETS + BENCHMARKS),
    slug="|".join(s.replace("+", r"\+") for s in SLUGS),
    seed=r"\d+",


rule all:
    input:
        f"{paths.REPORTS}/index.html",


rule download:
    # the run's datasets (dvc's download stage) and the test-only sets (its download_benchmark stage,
    # the same command and deps)
    input:
        code=dvc_code("download"),
    output:
        directory(f"{paths.RAW}/{{dataset}}"),
    params:
        file=PARAMS_FILE,
        sections=lambda wc: dvc_params("download", wc.dataset),
    conda:
        ENV
    log:
        "logs/download/{dataset}.log",
    shell:
        "python stages/download.py --params {params.file} --dataset {wildcards.dataset} > {log} 2>&1"


rule crop:
    input:
        rules.download.output,
        code=dvc_code("crop"),
    output:
        directory(f"{paths.CROPS}/{{dataset}}"),
    params:
        file=PARAMS_FILE,
        sections=lambda wc: dvc_params("crop", wc.dataset),
    conda:
        ENV
    log:
        "logs/crop/{dataset}.log",
    shell:
        "python stages/crop.py --params {params.file} --dataset {wildcards.dataset} > {log} 2>&1"


rule weights:
    input:
        code=dvc_code("weights"),
    output:
        directory(str(paths.WEIGHTS)),
    params:
        file=PARAMS_FILE,
        sections=dvc_params("weights"),
    conda:
        ENV
    log:
        "logs/weights.log",
    shell:
        "python stages/weights.py --params {params.file} > {log} 2>&1"


rule train:
    input:
        rules.crop.output,
        rules.weights.output,
        code=dvc_code("train"),
    output:
        f"{paths.MODELS}/{{dataset}}/{{slug}}/seed-{{seed}}/config.json",
        f"{paths.PLOTS}/train/{{dataset}}/{{slug}}/seed-{{seed}}.csv",
    params:
        # dvc's train stage trains the whole `strategy` selection; here each job trains the one
        # strategy of its wildcard, so the selection decides which jobs exist, not their params
        # (adding a strategy trains it alone, as dvc's persisted models/ and inputs hash do); likewise
        # each job trains the one seed of its wildcard, so `train.seeds` is left out too
        file=PARAMS_FILE,
        sections=lambda wc: dvc_params("train", wc.dataset, skip={"strategy", "train.seeds"}),
    conda:
        ENV
    log:
        "logs/train/{dataset}/{slug}/seed-{seed}.log",
    resources:
        gpu=1,
    shell:
        "python stages/train.py --params {params.file} --dataset {wildcards.dataset} --strategy {wildcards.slug} --seed {wildcards.seed} > {log} 2>&1"


rule train_curves:
    # dvc's train stage also writes these per-dataset files: every strategy's curves overlaid for
    # `dvc plots` and the final validation values (pipeline/training/monitor.py), from all trained models
    input:
        lambda wc: TRAINED(wc.dataset),
        code=dvc_code("train"),
    output:
        directory(f"{paths.PLOTS}/curves/{{dataset}}"),
        f"{paths.METRICS}/{{dataset}}-train.json",
    params:
        file=PARAMS_FILE,
        sections=lambda wc: dvc_params("train", wc.dataset),
    conda:
        ENV
    log:
        "logs/train_curves/{dataset}.log",
    shell:
        "python stages/train.py --params {params.file} --dataset {wildcards.dataset} --curves-only > {log} 2>&1"


rule evaluate:
    input:
        rules.crop.output,
        rules.weights.output,
        lambda wc: TRAINED(wc.dataset),
        code=dvc_code("evaluate"),
    output:
        directory(f"{paths.RESULTS}/{{dataset}}"),
        f"{paths.METRICS}/{{dataset}}.json",
        f"{paths.METRICS}/{{dataset}}-provenance.json",
        directory(f"{paths.METRICS}/{{dataset}}"),
    params:
        file=PARAMS_FILE,
        sections=lambda wc: dvc_params("evaluate", wc.dataset),
    conda:
        ENV
    log:
        "logs/evaluate/{dataset}.log",
    resources:
        gpu=1,
    shell:
        "python stages/evaluate.py --params {params.file} --dataset {wildcards.dataset} > {log} 2>&1"


rule sr_benchmark:
    input:
        expand(f"{paths.RAW}/{{benchmark}}", benchmark=BENCHMARKS),
        rules.weights.output,
        lambda wc: TRAINED(wc.dataset),
        code=dvc_code("sr_benchmark"),
    output:
        str(paths.benchmark_results_path("{dataset}")),
        str(paths.benchmark_metrics_path("{dataset}")),
        str(provenance_path(paths.benchmark_metrics_path("{dataset}"))),
    params:
        file=PARAMS_FILE,
        sections=lambda wc: dvc_params("sr_benchmark", wc.dataset),
    conda:
        ENV
    log:
        "logs/sr_benchmark/{dataset}.log",
    resources:
        gpu=1,
    shell:
        "python stages/benchmark.py --params {params.file} --dataset {wildcards.dataset} > {log} 2>&1"


rule report:
    input:
        # dvc's report deps: data/raw, data/crops, weights, metrics, results, models
        expand(f"{paths.RAW}/{{dataset}}", dataset=DATASETS + BENCHMARKS),
        expand(f"{paths.CROPS}/{{dataset}}", dataset=DATASETS),
        rules.weights.output,
        expand(f"{paths.METRICS}/{{dataset}}.json", dataset=DATASETS),
        expand(f"{paths.METRICS}/{{dataset}}-provenance.json", dataset=DATASETS),
        expand(f"{paths.METRICS}/{{dataset}}", dataset=DATASETS),
        expand(f"{paths.METRICS}/{{dataset}}-train.json", dataset=DATASETS),
        [str(paths.benchmark_metrics_path(ds)) for ds in DATASETS],
        [str(provenance_path(paths.benchmark_metrics_path(ds))) for ds in DATASETS],
        expand(f"{paths.RESULTS}/{{dataset}}", dataset=DATASETS),
        [path for ds in DATASETS for path in TRAINED(ds)],
        code=dvc_code("report"),
    output:
        f"{paths.REPORTS}/index.html",
    params:
        file=PARAMS_FILE,
        sections=dvc_params("report"),
    conda:
        ENV
    log:
        "logs/report.log",
    shell:
        "python stages/report.py --params {params.file} > {log} 2>&1"
