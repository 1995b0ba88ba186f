"""User-loop tests import their helpers, and the example's module, from these folders."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "torch-loop"
for folder in (str(HERE), str(EXAMPLE)):
    if folder not in sys.path:  # --import-mode=importlib does not add test folders to sys.path
        sys.path.insert(0, folder)
