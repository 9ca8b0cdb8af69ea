"""tools/bench/ scripts imported as modules, for the tests of the benchmarks themselves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench"


def load_bench(name: str) -> ModuleType:
    """tools/bench/NAME.py as the module NAME (registered in sys.modules: dataclasses look
    their module up there; the script's own sys.path setup runs, so its siblings import)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
