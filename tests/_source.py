"""Run a module from its ``.py`` source, whether or not ``make native`` compiled it.

Tests of compiled hot modules check the plain-Python source too: it is the fallback where no
extension is built, and the two must behave alike.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def plain_python(module: ModuleType) -> ModuleType:
    """A fresh copy of ``module`` executed from its source file, beside the imported one."""
    assert module.__file__ is not None
    stem = module.__name__.rpartition(".")[2]
    source = Path(module.__file__).with_name(f"{stem}.py")
    spec = importlib.util.spec_from_file_location(f"{module.__name__}_source", source)
    assert spec is not None
    assert spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    # Registered as the import system does: the dataclass decorator looks its class's module up
    # in sys.modules (to read string annotations).
    sys.modules[spec.name] = copy
    spec.loader.exec_module(copy)
    return copy
