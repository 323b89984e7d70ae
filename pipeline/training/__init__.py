"""Training: the generators of every strategy, trained, watched and kept.

    train    the train stage: the training loop (alternating updates, checkpoints, resume, inputs hash)
    fast     the fast training path (batches on the device, fewer read-backs, bf16 where native)
    monitor  DVCLive logs, the validation pass, the training curves and summary
    zoo      the model zoo: trained runs committed to the repository (zoo/), taken by the train stage
"""
