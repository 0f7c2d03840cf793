"""``python -m reconciler.precompile``: byte-compile bpfman and fill the table of its
dataclasses' compiled methods (``reconciler.codecache``), so that no command compiles anything.

Both are written even when bytecode writing is off (``PYTHONDONTWRITEBYTECODE``), as
``compileall`` writes: the install script runs this once, and the VM tier before each boot,
because the guest sees the checkout read-only. Exits 0; a module that cannot be imported (an
optional dependency missing) is named on stderr and its classes are left to compile at run time.
"""

from __future__ import annotations

import compileall
import importlib
import os
import pkgutil
import sys

import reconciler
from reconciler import codecache


def main() -> int:
    root = os.path.dirname(os.path.abspath(reconciler.__file__))
    compileall.compile_dir(root, quiet=1)
    for info in pkgutil.walk_packages([root], prefix="reconciler."):
        if info.name == "reconciler.precompile":  # this file, running as __main__
            continue
        try:
            importlib.import_module(info.name)
        except Exception as e:  # noqa: BLE001 - reported, and harmless: those classes miss
            print(f"precompile: {info.name} not imported: {e}", file=sys.stderr)
    codecache.save(force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
