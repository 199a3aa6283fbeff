"""Package rules from DESIGN.md: import edges, a light ``import medseg``, our ``kernels``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> medseg packages it may import (errors and files are leaves every layer may use)
LEAVES = {"errors", "files"}
ALLOWED = {
    "io": {"io", *LEAVES},
    "data": {"data", "io", "transforms", *LEAVES},
    "engine": {"engine", "losses", "metrics", "transforms", *LEAVES},
    "losses": {"losses"},
    "metrics": {"metrics"},
    "transforms": {"transforms", "io", *LEAVES},
    "models": {"models", *LEAVES},
    "inference": {"inference", "engine", "io", "transforms", "models", *LEAVES},
    "viz": {"viz", "transforms", *LEAVES},
    "files": {"errors"},
    "cli": None,  # top layer
}


def _medseg_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "medseg" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_edges(package):
    allowed = ALLOWED[package]
    base = ROOT / "medseg" / package
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    for path in files:
        used = _medseg_imports(path)
        if allowed is not None:
            assert used <= allowed, f"{path.relative_to(ROOT)} imports {sorted(used - allowed)}"
        if package == "models":
            text = path.read_text(encoding="utf-8")
            assert "import lightning" not in text and "from lightning" not in text


def test_import_medseg_is_light():
    code = (
        "import sys, medseg, medseg.io, medseg.viz, medseg.transforms.planes, medseg.errors;"
        "heavy = {'torch', 'gradio', 'sam2', 'SimpleITK', 'triton', 'lightning', 'monai'};"
        "print(sorted(heavy & set(sys.modules)))"
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


def test_kernels_is_ours():
    import kernels

    assert Path(kernels.__file__).resolve().is_relative_to(ROOT)


def test_models_reach_kernels_through_one_seam():
    """DESIGN.md: models -> models.layers -> kernels; only layers/attention.py imports it."""
    seam = ROOT / "medseg" / "models" / "layers" / "attention.py"
    importers = []
    for path in sorted((ROOT / "medseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "kernels" or n.startswith("kernels.") for n in names):
                importers.append(path)
    assert set(importers) == {seam}, [str(p.relative_to(ROOT)) for p in importers]


def test_only_the_cli_imports_apps():
    """``apps`` sits on top of the library: no medseg package but ``cli`` may import it."""
    for path in sorted((ROOT / "medseg").rglob("*.py")):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not any(n.split(".")[0] == "apps" for n in names), path.relative_to(ROOT)


def test_import_apps_viewer_is_light():
    """``medseg view`` sets GRADIO_TEMP_DIR before Gradio loads, so the package must not load it."""
    code = (
        "import sys, apps.viewer, apps.viewer.launch, apps.viewer.state, apps.viewer.opening;"
        "print(sorted({'gradio', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
