"""gcn-bench: a reproducible benchmark of the Generative Collaborative Networks super-resolution losses.

Rooms (subpackages, one job each; their own docstrings list their modules):
    data        where the raw images come from and how they become the HR/LR crops
    nets        the networks, the strategies registry, their ImageNet weights, tiled super-resolution
    training    the training loop, its fast path, its monitoring, the model zoo
    evaluation  the metrics, the evaluate and sr_benchmark stages, statistics, the paper's claims
    reporting   the paper's tables, the deviations from its experiment, the HTML report and landing page
    lease       the GPU bundle: `python -m pipeline.lease`
    campaign    the CPU campaign: `python -m pipeline.campaign`
    app         the `gcn-bench` command (`python -m pipeline.app`)

Shared by every room (top level, importing no room at load time):
    config      load and validate params.yaml
    cli         the stage CLIs' argument parsing and clean user errors
    paths       where every stage reads and writes
    fileio      checksums and atomic writes
    errors      the errors that are the user's to fix
    device      which torch device a stage runs on
    resources/  the paper's published numbers (gcn_paper_results.csv, sr_benchmark_results.csv)
"""

__version__ = "0.1.0"
