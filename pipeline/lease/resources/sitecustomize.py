"""The GPU machine's Python packages, imitated on a CPU for the lease rehearsal (pipeline/lease/carry.py).

The rehearsal copies this file as ``sitecustomize.py`` into a folder on PYTHONPATH, so Python runs
it at start-up in the rehearsal's device process and in every process that one starts. It puts a
finder first on ``sys.meta_path``: each top-level module named in the file ``$GCN_LEASE_BLOCKED``
(one name a line: the modules of every package installed here that the GPU machine lacks) can be
imported only from the folders in ``$GCN_LEASE_ALLOWED`` (os.pathsep-separated: the folder the
shipped wheels are installed into, and the copy of the working tree). Anywhere else it raises
ModuleNotFoundError, as on the GPU machine. Modules imported before this runs (by .pth files) are
not affected; none of the blocked ones is.
"""

import importlib.machinery
import os
import sys


class DeviceBlocker:
    """A meta-path finder: blocked top-level modules come from the allowed folders or not at all."""

    def __init__(self, blocked: set, allowed: list) -> None:
        self.blocked, self.allowed = blocked, allowed

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.blocked:
            return None  # submodules follow their package; the others import as usual
        spec = importlib.machinery.PathFinder.find_spec(name, self.allowed)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine, and the lease does "
                                      f"not ship it)", name=name)
        return spec


def _install() -> None:
    listing = os.environ.get("GCN_LEASE_BLOCKED")
    if not listing:
        return
    with open(listing) as handle:
        blocked = {line.strip() for line in handle if line.strip()}
    allowed = [p for p in os.environ.get("GCN_LEASE_ALLOWED", "").split(os.pathsep) if p]
    sys.meta_path.insert(0, DeviceBlocker(blocked, allowed))


_install()
