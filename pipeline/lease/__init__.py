"""The GPU bundle: training on a GPU machine with no network or a time limit, in one command there.

    command    `python -m pipeline.lease` (__main__.py): prepare, pre-flight, rehearse, run, import
    plan       the leases' plan: which runs, in which order, with which parameters; which are done; which fit
    carry      what a lease ships to the GPU machine, its pre-flight check, the rehearsal's import blocker
    machine    the GPU machine's side: set-up of the bare machine, NVIDIA MPS, the job processes
    worker     one job in a process of its own (`python -m pipeline.lease.worker JOB SPEC.json`)
    bundle     what comes back (the bundle), its limits, and its import into the project and the zoo
    rehearsal  a whole lease rehearsed on a CPU at toy size
    resources/ the GPU machine's package list and the rehearsal's sitecustomize.py
"""
