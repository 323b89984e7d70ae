"""The `gcn-bench` command: the benchmark's trained models and metrics on your own images.

    command  `gcn-bench` (and `python -m pipeline.app`, __main__.py): upscale, score, models, config, compare
    outputs  where its commands write: folders checked before any work, files written atomically
"""
