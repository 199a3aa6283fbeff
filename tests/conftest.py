"""Shared fixtures. Tests generate their data; the only real files come from installed wheels."""

from __future__ import annotations

from pathlib import Path

import pytest


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
