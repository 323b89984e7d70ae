"""Data: where a dataset's raw images come from and how they become the HR/LR crops every later stage reads.

    sources   a dataset's source (skimage, pypi, url, folder): fetch its images, record their origin
    download  robust HTTP download (resume, retries, checksums, atomic rename)
    crop      the crop stage: deterministic HR crops, their LR versions, the train/test split, the manifest
    kernels   resampling kernels (MATLAB's bicubic imresize; which bicubic the baseline uses)
    imageset  the cropped HR/LR pairs of a dataset split, read as tensors
"""
