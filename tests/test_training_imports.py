"""The training packages never load model code: nets are injected (DESIGN.md §1).

The per-package import edges live in ``tests/test_architecture.py``.
"""

from __future__ import annotations

import subprocess
import sys


def test_engine_and_data_load_no_model_code():
    code = (
        "import sys, medseg.engine, medseg.data, medseg.cli.train;"
        "print(sorted(m for m in sys.modules if m.startswith('medseg.models')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=True,
    )
    assert out.stdout.strip() == "[]"
