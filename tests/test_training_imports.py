"""Import edges of the training packages (DESIGN.md §1): nets are injected, never imported."""

from __future__ import annotations

import subprocess
import sys

import pytest
from testkit import ROOT, load_test_module

ALLOWED = {
    "data": {"data", "io", "transforms", "errors"},
    "engine": {"engine", "losses", "metrics", "transforms", "errors"},
    "losses": {"losses"},
    "metrics": {"metrics"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_edges(package):
    medseg_imports = load_test_module("test_architecture")._medseg_imports
    for path in sorted((ROOT / "medseg" / package).rglob("*.py")):
        used = medseg_imports(path)
        assert used <= ALLOWED[package], (
            f"{path.relative_to(ROOT)} imports {used - ALLOWED[package]}"
        )


def test_engine_and_data_load_no_model_code():
    code = (
        "import sys, medseg.engine, medseg.data, medseg.cli.train;"
        "print(sorted(m for m in sys.modules if m.startswith('medseg.models')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
