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
    "inference": {"inference", "io", "transforms", "models", "metrics", *LEAVES},
    "viz": {"viz", "transforms", *LEAVES},
    # the service layer under the CLI and the viewer
    "api": {"api", "inference", "io", "transforms", "viz", "models", *LEAVES},
    "files": {"errors"},
    "errors": set(),
    "cli": None,  # top layer
}
# the only inference module that may import ``engine`` (and so Lightning): it loads the Task
# classes of ``medseg fit`` checkpoints; predictors import it, never a task
ENGINE_LOADERS = {"medseg/inference/checkpoints.py"}
# the CLI is the top floor: ``medseg prepare`` runs data_prep's writers
DATA_PREP_CALLERS = {"medseg/cli/prepare.py"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), anywhere in the file."""
    package = list(path.relative_to(ROOT).parts[:-1])  # a module's (or __init__'s) package
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = package[: len(package) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _medseg_imports(path: Path) -> set[str]:
    """The ``medseg`` sub-packages (``io``, ``engine``, ...) that ``path`` imports."""
    return {
        name.split(".")[1]
        for name in _imports(path)
        if name.startswith("medseg.") and not name.split(".")[1].startswith("__")
    }


def _tops(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imports(path)}


def _sources(*parts: str) -> list[Path]:
    return sorted((ROOT.joinpath(*parts)).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_edges(package):
    allowed = ALLOWED[package]
    base = ROOT / "medseg" / package
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    for path in files:
        used = _medseg_imports(path)
        if str(path.relative_to(ROOT)) in ENGINE_LOADERS:
            used -= {"engine"}
        if allowed is not None:
            assert used <= allowed, f"{path.relative_to(ROOT)} imports {sorted(used - allowed)}"
        if package == "models":
            text = path.read_text(encoding="utf-8")
            assert "import lightning" not in text and "from lightning" not in text


def test_import_medseg_is_light():
    code = (
        "import sys, medseg, medseg.io, medseg.viz, medseg.transforms.planes, medseg.errors;"
        "heavy = {'torch', 'gradio', 'sam2', 'SimpleITK', 'triton', 'lightning', 'monai', 'dipy'};"
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


# what runs a model; the CLI's segment/restore/demo and the viewer reach them through medseg.api
MODEL_RUNNERS = (
    "medseg.models", "medseg.engine", "medseg.inference.automatic",
    "medseg.inference.restoration", "medseg.inference.litemedsam",
    "medseg.inference.sam_family", "medseg.inference.downstream", "medseg.inference.classical",
)  # fmt: skip
API_CALLERS = [
    *(f"medseg/cli/{n}.py" for n in ("segment", "autoseg", "samseg", "demo", "restore")),
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "apps").rglob("*.py"))),
]


@pytest.mark.parametrize("name", API_CALLERS)
def test_the_cli_and_the_viewer_run_models_through_the_api(name):
    used = _imports(ROOT / name)
    hits = sorted(u for u in used if any(u == m or u.startswith(m + ".") for m in MODEL_RUNNERS))
    assert not hits, f"{name} imports {hits}: go through medseg.api"


def test_the_api_exports_what_it_documents():
    import medseg
    import medseg.api

    assert set(medseg.__all__) >= {"segment", "Segmenter", "restore", "Restorer", "Box", "Point"}
    for name in medseg.__all__:
        assert getattr(medseg, name) is not None, name
    assert medseg.segment is medseg.api.segment and medseg.Box is medseg.api.Box


def test_import_medseg_api_is_light():
    """``import medseg.api`` (the notebook entry point) loads no torch until a model is used;
    the classical restorer (no checkpoint) loads neither torch nor DIPY until it restores."""
    code = (
        "import sys, medseg, medseg.api; medseg.Segmenter; medseg.Restorer();"
        "print(sorted({'torch', 'lightning', 'monai', 'gradio', 'dipy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
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


def test_inference_imports_engine_only_where_a_checkpoint_is_loaded():
    """Predictors never import a training task: only ``ENGINE_LOADERS`` reach ``engine``."""
    importers = {
        str(path.relative_to(ROOT))
        for path in _sources("medseg", "inference")
        if "engine" in _medseg_imports(path)
    }
    assert importers <= ENGINE_LOADERS, sorted(importers - ENGINE_LOADERS)


def test_the_library_never_imports_data_prep():
    """``data_prep`` writes the prepared format; the library reads it (``medseg.data``). Only
    the CLI's ``medseg prepare`` calls the tooling."""
    importers = {
        str(path.relative_to(ROOT)) for path in _sources("medseg") if "data_prep" in _tops(path)
    }
    assert importers <= DATA_PREP_CALLERS, sorted(importers - DATA_PREP_CALLERS)


def test_data_prep_imports_medseg_but_not_its_top_floor():
    """``data_prep`` -> ``medseg`` (the library), never ``medseg.cli`` or ``apps``."""
    for path in _sources("data_prep"):
        names = _imports(path)
        assert "apps" not in _tops(path), path.relative_to(ROOT)
        assert not any(n == "medseg.cli" or n.startswith("medseg.cli.") for n in names), (
            path.relative_to(ROOT)
        )


def test_import_data_prep_and_the_prepared_reader_are_light():
    """The prepared-format reader and ``data_prep`` load no torch, Lightning or MONAI."""
    code = (
        "import sys, data_prep, medseg.data.prepared_files, medseg.data.acdc;"
        "print(sorted({'torch', 'lightning', 'monai'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_argparse_only_in_the_cli():
    """No library function takes an ``argparse.Namespace``: ``argparse`` stays in ``medseg.cli``."""
    for path in _sources("medseg"):
        if "cli" in path.relative_to(ROOT / "medseg").parts:
            continue
        assert "argparse" not in _tops(path), path.relative_to(ROOT)


def test_the_leaves_import_nothing_else_of_medseg():
    """``medseg.errors`` imports nothing of medseg; ``medseg.files`` only ``medseg.errors``."""
    assert _medseg_imports(ROOT / "medseg" / "errors.py") == set()
    assert _medseg_imports(ROOT / "medseg" / "files.py") == {"errors"}
    assert not any(n.startswith("medseg.") for n in _imports(ROOT / "medseg" / "errors.py"))


# the segmentation-format libraries, each behind one io module (the API reaches them there)
FORMAT_LIBRARIES = {
    "highdicom": {"medseg/io/dicom_seg.py"},
    "rt_utils": {"medseg/io/rtstruct.py"},
    "slicerio": {"medseg/io/seg_nrrd.py"},
    "nrrd": set(),  # pynrrd only through slicerio
}


def test_format_libraries_stay_in_their_io_modules():
    for path in [*_sources("medseg"), *_sources("apps")]:
        rel = str(path.relative_to(ROOT))
        for top in _tops(path) & set(FORMAT_LIBRARIES):
            assert rel in FORMAT_LIBRARIES[top], f"{rel} imports {top}: use medseg.io's module"


def test_pydicom_is_used_only_by_the_dicom_output_modules():
    """pydicom reads/writes SEG and RTSTRUCT; series reading stays SimpleITK (medseg.io.dicom)."""
    allowed = {"medseg/io/dicom_seg.py", "medseg/io/rtstruct.py", "medseg/io/label_names.py"}
    users = {str(p.relative_to(ROOT)) for p in _sources("medseg") if "pydicom" in _tops(p)}
    assert users <= allowed, sorted(users - allowed)


def test_import_medseg_api_loads_no_format_library():
    code = (
        "import sys, medseg, medseg.io, medseg.api, medseg.api.exports, medseg.io.label_names;"
        "print(sorted({'highdicom', 'rt_utils', 'slicerio', 'pydicom', 'nrrd', 'cv2'}"
        " & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
