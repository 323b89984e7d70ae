"""gcn-bench: a reproducible benchmark of the Generative Collaborative Networks super-resolution losses.

Modules (one job each):
    config      load and validate params.yaml
    sources     where raw images come from (skimage, pypi, url, folder)
    download    robust HTTP download (resume, retries, checksums, atomic rename)
    crop        deterministic HR/LR crops and their manifest
    models      generator F, discriminator, auto-encoder (the extractor Phi lives inside them)
    strategies  the registry of ways to obtain Phi (mse, ran, rec, cla, dis, adv, ...)
    train       the training loop (alternating updates, checkpoints, resume)
    weights     ImageNet backbone weights resolver (cache, torchvision URL, registry packages)
    metrics     L2, SSIM, PSNR
    perceptual  the six-network perceptual error (LPIPS)
    device      which torch device a stage runs on
    evaluate    super-resolve the test set and compute every metric
    protocol    the standard SR protocol: trained models on whole Set5 / Set14 / BSD100 images
    benchmark   the sr_benchmark stage's files (metrics/<dataset>-benchmarks.json)
    published   SRGAN's and the DP paper's published benchmark numbers beside ours
    report      versioned HTML reports beside the paper's numbers
"""

__version__ = "0.1.0"
