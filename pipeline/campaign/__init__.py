"""The CPU campaign: the plan's runs trained on this machine, each finished run written to the model zoo.

    command  `python -m pipeline.campaign` (__main__.py): status, deadline planning, the training processes
"""
