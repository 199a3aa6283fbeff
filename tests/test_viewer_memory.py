"""The viewer's memory budget (issue 15, item 3): one per process over every image and session,
checked from the header before a file is decompressed, given back when a session is dropped; a
refusal is one line that says what to do. Nothing here allocates more than a few MB."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from bad_inputs import _UNDER_GUARD, _promise
from testkit import write_nifti

from apps.viewer import opening
from apps.viewer.budget import BUDGET, MemoryBudget
from apps.viewer.state import new_session
from medseg.errors import InputError
from medseg.inference.memory import viewer_session_need
from medseg.io import VolumeHeader

SHAPE = (64, 64, 32)


@pytest.fixture
def budget():
    """The process budget set to what exactly 2 sessions on a SHAPE image need."""
    header = VolumeHeader("x", SHAPE)
    per_session = viewer_session_need(header)  # file opened: image + loading peak + session
    BUDGET.reset(limit=2 * per_session)
    yield BUDGET
    BUDGET.reset()


@pytest.fixture
def scan(tmp_path):
    image = np.random.default_rng(0).normal(100, 20, SHAPE).astype(np.float32)
    return write_nifti(tmp_path / "scan.nii.gz", image)


def _open(path, tmp_path):
    source = opening.open_image(path, tmp_path)
    return new_session(source, "scan", window=(100.0, 80.0), preset="manual")


def test_sessions_share_one_budget_and_give_it_back(budget, scan, tmp_path):
    first = _open(scan, tmp_path)
    second = _open(scan, tmp_path)
    assert budget.used > 0
    with pytest.raises(InputError) as info:
        _open(scan, tmp_path)
    message = str(info.value)
    assert info.value.code == "not_enough_memory" and "\n" not in message
    assert message.startswith(f"{scan}: not enough memory: a viewer session on this image needs")
    assert message.endswith("close other viewer tabs or open a smaller image (MEDSEG_MAX_MEMORY "
                            "sets the budget)")  # fmt: skip
    del first  # a tab closed, a session expired or was evicted by Gradio
    gc.collect()
    third = _open(scan, tmp_path)
    assert third.image.spatial_shape == SHAPE and second is not None
    del second, third
    gc.collect()
    assert budget.used == 0


def test_a_bomb_is_refused_before_it_is_decompressed(budget, tmp_path):
    path = _promise("bomb.nii.gz", np.float32, _UNDER_GUARD)(tmp_path)  # 2 GiB promised
    with pytest.raises(InputError) as info:
        opening.open_image(path, tmp_path)
    assert info.value.code == "not_enough_memory"  # not "truncated": nothing was read
    assert "a viewer session on this image needs about 18.09 GiB" in str(info.value)
    assert budget.used == 0


def test_labels_with_another_shape_are_refused_from_the_header(budget, scan, tmp_path):
    session = _open(scan, tmp_path)
    big = _promise("labels.nii.gz", np.uint8, _UNDER_GUARD)(tmp_path)
    with pytest.raises(InputError, match=r"labels have shape \(1024, 1024, 511\), the image"):
        opening.open_labels(big, session.image)


def test_the_shared_command_line_image_still_reserves_each_session(budget, scan, tmp_path):
    source = opening.open_image(scan, tmp_path)
    sessions = []
    with pytest.raises(InputError, match="a viewer session needs about"):
        for _ in range(10):
            sessions.append(new_session(source, "scan", window=(1.0, 2.0), preset="manual"))
    assert 1 <= len(sessions) < 10


def test_budget_reservations_are_idempotent():
    budget = MemoryBudget(limit=100)
    r = budget.reserve(60, what="x")
    with pytest.raises(InputError, match="x needs about 0.00 GiB, 0.00 GiB left"):
        budget.reserve(50, what="x")
    r.release()
    r.release()
    assert budget.used == 0
    budget.reserve(100, what="x")
