"""Reporting: the numbers beside the paper's, rendered as versioned HTML reports.

    tables      the paper's Tables 2-5 rebuilt from our metrics, beside the paper's own numbers
    published   the standard SR protocol's table beside SRGAN's and the DP paper's published numbers
    deviations  every way a run differs from the paper's experiment, as data
    landing     which version leads reports/index.html, and which runs are smoke runs
    report      the report stage: reports/<version>/index.html, reports/index.html, reports/compare.html
    templates/  the Jinja templates of those pages
"""
