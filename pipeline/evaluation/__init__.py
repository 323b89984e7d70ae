"""Evaluation: the trained models measured, with the uncertainty of every number.

    metrics     low-level image metrics: the paper's L2 and SSIM, PSNR and SSIM on RGB and Y
    perceptual  the six-network perceptual error (LPIPS)
    evaluate    the evaluate stage: every strategy and seed on a dataset's test crops
    stats       intervals, ties with the best, winner stability, rank agreement
    protocol    the standard SR protocol: trained models on whole Set5 / Set14 / BSD100 images
    benchmark   the sr_benchmark stage's files (loads the protocol only when a set is selected)
    verdicts    the paper's claims answered per domain: supported, refuted or undecided
    score       a folder of SR images scored against HR references (`gcn-bench score`)
"""
