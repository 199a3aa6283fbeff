"""Shared fixtures. Tests generate their data; the only real files come from installed wheels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _medseg_cache(tmp_path_factory):
    """Converted encoders (medseg.inference.runtimes) go to one folder per test session, not
    to the user's ~/.cache; subprocesses inherit it."""
    previous = os.environ.get("MEDSEG_CACHE")
    os.environ["MEDSEG_CACHE"] = str(tmp_path_factory.mktemp("medseg-cache"))
    yield
    if previous is None:
        os.environ.pop("MEDSEG_CACHE", None)
    else:
        os.environ["MEDSEG_CACHE"] = previous


@pytest.fixture(scope="session")
def mni_path() -> Path:
    from nilearn.datasets import MNI152_FILE_PATH

    return Path(MNI152_FILE_PATH)


@pytest.fixture(autouse=True)
def _skip_gpu_without_cuda(request):
    if request.node.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
