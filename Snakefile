# The same DAG as dvc.yaml, driven by Snakemake at a finer grain: one training job per
# dataset x strategy, so `snakemake -c N` (or a cluster profile, see profiles/slurm) runs them in
# parallel. Every rule calls the same stage CLI as dvc.yaml, with the same parameters file.
#
#   snakemake -c 2                                 # the parameters in params.yaml
#   snakemake -c 2 --config params=other.yaml      # another parameters file
from pipeline import paths, strategies
from pipeline.config import load_params

PARAMS = config.get("params", "params.yaml")
P = load_params(PARAMS)
DATASETS = P["datasets"]
# one training job per strategy that trains a generator (bicubic needs none: evaluate builds it)
SLUGS = [strategies.slug(s) for s in strategies.select(P["strategy"]) if strategies.get(s).trains_generator]
TRAINED = lambda ds: [f"{paths.models_dir(ds)}/{slug}/config.json" for slug in SLUGS]

wildcard_constraints:
    dataset="|".join(DATASETS),
    slug="|".join(s.replace("+", r"\+") for s in SLUGS),


rule all:
    input:
        f"{paths.REPORTS}/index.html",


rule download:
    output:
        directory(f"{paths.RAW}/{{dataset}}"),
    shell:
        "python stages/download.py --params {PARAMS} --dataset {wildcards.dataset}"


rule crop:
    input:
        rules.download.output,
    output:
        directory(f"{paths.CROPS}/{{dataset}}"),
    shell:
        "python stages/crop.py --params {PARAMS} --dataset {wildcards.dataset}"


rule weights:
    output:
        directory(str(paths.WEIGHTS)),
    shell:
        "python stages/weights.py --params {PARAMS}"


rule train:
    input:
        rules.crop.output,
        rules.weights.output,
    output:
        f"{paths.MODELS}/{{dataset}}/{{slug}}/config.json",
        f"{paths.PLOTS}/train/{{dataset}}/{{slug}}.csv",
    resources:
        gpu=1,
    shell:
        "python stages/train.py --params {PARAMS} --dataset {wildcards.dataset} --strategy {wildcards.slug}"


rule evaluate:
    input:
        rules.crop.output,
        rules.weights.output,
        lambda wc: TRAINED(wc.dataset),
    output:
        directory(f"{paths.RESULTS}/{{dataset}}"),
        f"{paths.METRICS}/{{dataset}}.json",
    resources:
        gpu=1,
    shell:
        "python stages/evaluate.py --params {PARAMS} --dataset {wildcards.dataset}"


rule report:
    input:
        expand(f"{paths.METRICS}/{{dataset}}.json", dataset=DATASETS),
    output:
        f"{paths.REPORTS}/index.html",
    shell:
        "python stages/report.py --params {PARAMS}"
