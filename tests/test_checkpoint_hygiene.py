"""CheckpointHygiene on resume: the top-k files and the restored ModelCheckpoint state agree
again after a kill, and the best model is never deleted (the two kill windows of Lightning's
save-new-best / delete-old-best / write-last.ckpt sequence)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from medseg.engine.callbacks import CheckpointHygiene


def _resume(tmp_path, tracked: dict[str, float], files: list[str]):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name in [*files, "last.ckpt"]:
        (ckpts / name).write_bytes(b"x")
    cb = ModelCheckpoint(dirpath=ckpts, monitor="val/dice", mode="max", save_top_k=1)
    cb.best_k_models = {str(ckpts / n): torch.tensor(v) for n, v in tracked.items()}
    (name, score), *_ = tracked.items()
    cb.best_model_path, cb.best_model_score = str(ckpts / name), torch.tensor(score)
    cb.kth_best_model_path, cb.kth_value = cb.best_model_path, cb.best_model_score
    trainer = SimpleNamespace(
        is_global_zero=True, ckpt_path=str(ckpts / "last.ckpt"), checkpoint_callbacks=[cb]
    )
    hygiene = CheckpointHygiene(ckpts, tmpdir=tmp_path / ".tmp")
    hygiene.on_train_start(trainer, None)
    return ckpts, cb, hygiene


def test_kill_before_the_old_best_was_deleted_removes_the_untracked_extra(tmp_path):
    old, new = "epoch=1-step=10-dice=0.5000.ckpt", "epoch=2-step=20-dice=0.7000.ckpt"
    ckpts, cb, hygiene = _resume(tmp_path, {old: 0.5}, [old, new])
    assert sorted(p.name for p in ckpts.glob("epoch=*.ckpt")) == [old]
    assert [p.name for p in hygiene.removed] == [new]
    assert cb.best_model_path == str(ckpts / old)


def test_kill_after_the_old_best_was_deleted_adopts_the_new_best(tmp_path):
    old, new = "epoch=1-step=10-dice=0.5000.ckpt", "epoch=2-step=20-dice=0.7000.ckpt"
    ckpts, cb, hygiene = _resume(tmp_path, {old: 0.5}, [new])  # the old best is gone
    assert sorted(p.name for p in ckpts.glob("epoch=*.ckpt")) == [new] and not hygiene.removed
    assert cb.best_model_path == str(ckpts / new) == cb.kth_best_model_path
    assert float(cb.best_model_score) == pytest.approx(0.7)
    assert list(cb.best_k_models) == [str(ckpts / new)]
