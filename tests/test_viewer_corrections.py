"""Corrections in the viewer: after propagation, a click re-segments its slice and the change
travels through the neighbours (the service's ``PromptedVolume.correct``), on an oracle
predictor whose answers are known (see ``tests/test_interactive.py``)."""

from __future__ import annotations

import numpy as np
from testkit import load_test_module, write_nifti

from apps.viewer import callbacks as cb
from apps.viewer.models import ModelHub

interactive = load_test_module("test_interactive")
SHAPE = (40, 40, 30)


class ForkingOracle(interactive.Oracle):
    """The oracle, shared by sessions; on ``leak`` slices it answers with a square as large as
    the object's (a neighbour the stopping rule cannot tell from it)."""

    def fork(self):
        return self

    def predict(self, index, box=None, points=None, point_labels=None, step=0):
        if index not in self.leak:
            return super().predict(index, box, points, point_labels, step)
        mask = np.zeros(self.truth.shape[1:], dtype=bool)
        mask[12:28, 12:28] = True
        return mask, 0.9

    def set_stack(self, stack):  # the display stack of the session (truth stays ours)
        self.stack = stack


def test_a_negative_click_after_propagation_removes_the_leak_through_the_slices(tmp_path):
    tube = np.zeros(SHAPE, dtype=np.float32)
    tube[12:28, 12:28, 5:25] = 500.0
    image = tube + np.random.default_rng(0).normal(100, 5, SHAPE).astype(np.float32)
    session = cb.open_file(str(write_nifti(tmp_path / "tube.nii.gz", image)), str(tmp_path))
    view = session.views["axial"]
    truth = view.stack(tube > 0)
    oracle = ForkingOracle(truth, leak={25, 26})  # the model leaks past the end
    hub = ModelHub(predictor_factory=lambda: oracle)
    rows, cols = np.nonzero(truth[14])
    box = f"{cols.min()} {rows.min()} {cols.max()} {rows.max()}"
    cb.prompt_text(session, f"axial 14 box {box}", hub)
    cb.propagate(session, hub, 30)
    labelled = view.stack(session.labels).reshape(len(truth), -1).any(1)
    assert np.flatnonzero(labelled).tolist() == list(range(5, 27))  # 25, 26 leaked

    oracle.leak = set()
    message = cb.prompt_text(session, "axial 25 point 1 1 -", hub)
    assert "corrected axial slice 25" in message
    labelled = view.stack(session.labels).reshape(len(truth), -1).any(1)
    assert np.flatnonzero(labelled).tolist() == list(range(5, 25))
    assert (view.stack(session.labels)[5:25] == truth[5:25]).all()
    cb.undo(session)  # undoable like every edit
    assert view.stack(session.labels)[26].any()
