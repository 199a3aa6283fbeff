"""Memory a pipeline will need, estimated from a header and refused before anything is allocated.

A 2.4 MB ``.nii.gz`` can decompress to gigabytes, and every pipeline makes float copies of the
volume on top of it. The library entry points (prompted, automatic, restoration, the viewer)
therefore estimate their peak from the :class:`~medseg.io.volume.VolumeHeader` (the loader's
``on_header`` callback runs before a voxel is decompressed) and refuse with one line::

    error: scan.nii.gz: not enough memory: prompted segmentation needs about 6.0 GiB, 3.1 GiB
    available; crop or downsample the image first (MEDSEG_MAX_MEMORY sets the limit)

**The limit** is :func:`memory_limit`: ``MEDSEG_MAX_MEMORY`` when set (bytes, or with a unit:
``8G``, ``512M``, ``1.5GiB``; binary units), else :func:`available_memory` (``MemAvailable``
of ``/proc/meminfo``, lowered to what the process's cgroup v2 still allows; ``os.sysconf``
physical pages elsewhere; unknown -> no limit). The variable may lower the limit (a shared
server, a container whose ``/proc/meminfo`` shows the host) or raise it (you know swap or
memory that will be freed is there).

**The estimates** (bytes per input voxel ``V``; ``C`` channels, ``K`` classes, ``V'`` voxels on
the model grid, ``U`` output voxels of a restoration). Measured as the growth of the peak
resident set size (``VmHWM`` reset through ``/proc/self/clear_refs``) over a 256^3 or 160^3
float32 volume, 2 CPU threads, numpy 2.4, torch 2.14, MONAI 1.6; each figure is rounded up:

- loading: ``12 V`` per channel (``+ 2 x (itemsize - 4)`` for 8-byte voxels: the compressed
  stream's bytes and the stored array), the peak including the 4-byte float32 result
  (measured: .nii float32 5, .nii.gz float32 8, .nii/.nii.gz int16 with a slope 12);
- prompted (LiteMedSAM): ``8 V`` plus the embedding cache, ``min(largest side, 256) x 4 MiB``
  (measured 6.1: ``to_uint8``, the display stack, the masks and the labels);
- automatic: ``(56 + 8C) V + (24 + 8C) V'``, plus ``K (4 V' + 8 V)`` with probabilities
  (measured 41 at ``V' = V``, where nothing is resampled; 69, 71 and 123 at ``V'/V`` = 0.25,
  0.5 and 2; probabilities with ``K = 4`` added 31 at 0.5 and 63 at 2);
- restoration: ``8 V + 24 U`` (measured 2-D 25 at ``U = V`` and 90 at ``U = 4V``; 3-D 20 at
  ``U = V`` and 108 at ``U = 8V``);
- viewer session: ``32 V`` plus its embedding cache, ``min(largest side, 32) x 4 MiB`` (counted
  from :mod:`apps.viewer.state`: labels, base labels and 10 undo copies in uint16, 24; the
  display stack 1; the prompted transients above, 6).

The loaded float32 image (``4 C V``) comes on top of each row's work; the total of a run that
still has to load is ``max(loading, image + work)``. Sliding windows add
``batch x window voxels x`` :data:`WINDOW_BYTES_PER_VOXEL` (x the output/input voxel ratio for
restoration): 128 bytes is a *floor*, below what every shipped net uses (measured per window
voxel: UNet 220-700, WAU 1,800-2,900, RAT 4,900-5,500, DISGAN's generator 7,500-7,900), so a
refusal is certain; what the floor misses is caught by :func:`allocation_errors` (torch or
numpy running out of memory during inference -> the same one-line error, not a traceback).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medseg.errors import InputError
from medseg.io.volume import VolumeHeader

__all__ = [
    "GIB",
    "MEMORY_ENV",
    "allocation_errors",
    "automatic_need",
    "available_memory",
    "check_memory",
    "check_prompted",
    "header_guard",
    "memory_limit",
    "parse_size",
    "prompted_guard",
    "prompted_need",
    "restoration_need",
    "viewer_session_need",
    "window_need",
]

GIB = 2**30
MIB = 2**20
MEMORY_ENV = "MEDSEG_MAX_MEMORY"
LOAD_BYTES_PER_VOXEL = 12  # loader peak per voxel and channel, the float32 result included
IMAGE_BYTES_PER_VOXEL = 4  # the loaded float32 image
PROMPTED_BYTES_PER_VOXEL = 8
EMBEDDING_BYTES = 4 * MIB  # one fp32 LiteMedSAM slice embedding (1, 256, 64, 64)
PROMPTED_CACHE_SLICES = 256  # LiteMedSAMPredictor's default cache
VIEWER_BYTES_PER_VOXEL = 32
VIEWER_CACHE_SLICES = 32  # apps.viewer.models.CACHE_SLICES
WINDOW_BYTES_PER_VOXEL = 128
PROMPTED_FIX = "crop or downsample the image first"

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping: ``MemAvailable`` (Linux), lowered
    to the cgroup v2 ``memory.max - memory.current`` of this process's groups; the physical
    memory (``os.sysconf``) where ``/proc/meminfo`` is missing; None when unknown."""
    found = _meminfo_available()
    if found is None:
        try:
            found = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()
    return found if room is None else min(found, room)


def memory_limit() -> int | None:
    """The budget of a run: ``MEDSEG_MAX_MEMORY`` when set, else :func:`available_memory`.

    Raises:
        InputError: ``bad_argument`` when ``MEDSEG_MAX_MEMORY`` is not a size.
    """
    text = os.environ.get(MEMORY_ENV, "").strip()
    return parse_size(text, what=MEMORY_ENV) if text else available_memory()


def parse_size(text: str, *, what: str = "size") -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"4000000000"`` -> bytes (binary units, any case)."""
    match = _SIZE.match(text)
    if match is None:
        raise InputError("bad_argument", f"{what}={text!r} is not a size like 8G, 512M or 1.5GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def check_memory(
    need: int,
    *,
    fix: str,
    what: str = "this run",
    path: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> None:
    """Refuse (``InputError`` ``not_enough_memory``, exit 2) when ``need`` bytes exceed ``limit``
    (default :func:`memory_limit`; no limit known -> no refusal). The line names both numbers
    and ``fix``, what lowers the need (an option, a smaller input)."""
    limit = memory_limit() if limit is None else limit
    if limit is None or need <= limit:
        return
    source = f" ({MEMORY_ENV})" if os.environ.get(MEMORY_ENV, "").strip() else ""
    raise InputError(
        "not_enough_memory",
        f"not enough memory: {what} needs about {_gib(need)} GiB, {_gib(limit)} GiB "
        f"available{source}; {fix}",
        path=None if path in (None, "") else str(path),
    )


def header_guard(
    need: Callable[[VolumeHeader], int], *, fix: str, what: str = "this run"
) -> Callable[[VolumeHeader], None]:
    """An ``on_header`` callback for :func:`medseg.io.load_volume`: refuses (as
    :func:`check_memory`) before a voxel is decompressed when ``need(header)`` does not fit."""

    def guard(header: VolumeHeader) -> None:
        check_memory(need(header), fix=fix, what=what, path=header.path)

    return guard


def prompted_need(header: VolumeHeader, *, loaded: bool = False) -> int:
    """Peak bytes of prompted segmentation (``to_uint8``, the display stack, masks, labels and
    LiteMedSAM's embedding cache); ``loaded``: the volume is already in memory."""
    cache = min(max(header.shape), PROMPTED_CACHE_SLICES) * EMBEDDING_BYTES
    return _total(header, PROMPTED_BYTES_PER_VOXEL * header.voxels, loaded) + cache


def prompted_guard() -> Callable[[VolumeHeader], None]:
    """``load_volume(..., on_header=prompted_guard())``: refuse a volume too large for prompted
    segmentation (:func:`prompted_need`) before it is decompressed."""
    return header_guard(prompted_need, fix=PROMPTED_FIX, what="prompted segmentation")


def check_prompted(volume_header: VolumeHeader) -> None:
    """:func:`check_memory` for prompted segmentation of a volume already in memory."""
    need = prompted_need(volume_header, loaded=True)
    check_memory(need, fix=PROMPTED_FIX, what="prompted segmentation", path=volume_header.path)


def automatic_need(
    header: VolumeHeader,
    *,
    target_spacing: tuple[float, ...] | list[float],
    classes: int,
    probabilities: bool = False,
    loaded: bool = False,
) -> int:
    """Peak bytes of automatic segmentation apart from the windows: resampling to
    ``target_spacing`` and back, the stitched logits of ``classes`` classes, argmax, labels and
    (``probabilities``) the softmax on both grids."""
    v = math.prod(header.shape)
    zoom = math.prod(header.spacing) / math.prod(float(t) for t in target_spacing)
    v_model = v * zoom
    c = header.channels
    work = (56 + 8 * c) * v + (24 + 8 * c) * v_model
    if probabilities:
        work += classes * (4 * v_model + 8 * v)
    return _total(header, int(work), loaded)


def restoration_need(header: VolumeHeader, *, upscale: int = 1, loaded: bool = False) -> int:
    """Peak bytes of restoration apart from the windows; ``upscale``: output voxels per input
    voxel (``scale**2`` for a 2-D super-resolution net, ``scale**3`` in 3-D)."""
    v = math.prod(header.shape)
    return _total(header, 8 * v + 24 * v * int(upscale), loaded)


def viewer_session_need(header: VolumeHeader, *, loaded: bool = False) -> int:
    """Bytes one viewer session may come to hold on this image: labels, base labels, undo
    copies, the display stack and prompt transients, and its LiteMedSAM embedding cache."""
    cache = min(max(header.shape), VIEWER_CACHE_SLICES) * EMBEDDING_BYTES
    work = VIEWER_BYTES_PER_VOXEL * math.prod(header.shape)
    return _total(header, work, loaded) + cache


def window_need(window_voxels: int, batch: int, *, upscale: int = 1) -> int:
    """Least bytes a batch of ``batch`` sliding windows of ``window_voxels`` input voxels needs
    (:data:`WINDOW_BYTES_PER_VOXEL`, a floor; see the module docstring)."""
    return int(batch) * int(window_voxels) * max(int(upscale), 1) * WINDOW_BYTES_PER_VOXEL


@contextmanager
def allocation_errors(fix: str, *, path: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Turn running out of memory inside the block (``MemoryError``, torch's CPU allocator
    failure, CUDA ``OutOfMemoryError``) into one ``not_enough_memory`` InputError naming ``fix``
    (the original is chained for ``--debug``)."""
    try:
        yield
    except InputError:
        raise
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and not _is_allocation_failure(err):
            raise
        device = "GPU" if "cuda" in str(err).lower() or "CUDA" in type(err).__name__ else "CPU"
        raise InputError(
            "not_enough_memory",
            f"not enough memory: the {device} ran out of memory during inference; {fix}",
            path=None if path in (None, "") else str(path),
        ) from err


def _is_allocation_failure(err: BaseException) -> bool:
    text = str(err).lower()
    return type(err).__name__ == "OutOfMemoryError" or any(
        s in text for s in ("can't allocate memory", "out of memory", "not enough memory")
    )


def _total(header: VolumeHeader, work: int, loaded: bool) -> int:
    """``work`` plus what loading needs: nothing when ``loaded``, else the larger of the loader's
    peak and the image that stays while the work runs."""
    if loaded:
        return int(work)
    load = (LOAD_BYTES_PER_VOXEL + 2 * max(header.itemsize - 4, 0)) * header.voxels
    return int(max(load, IMAGE_BYTES_PER_VOXEL * header.voxels + work))


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}" if n < 10 * GIB else f"{n / GIB:.0f}"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """Smallest ``memory.max - memory.current`` of this process's cgroup v2 and its parents."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
        rel = next(line[3:] for line in lines if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    folder = Path("/sys/fs/cgroup") / rel.lstrip("/")
    room = None
    for group in (folder, *folder.parents):
        if group == Path("/sys/fs/cgroup").parent:
            break
        try:
            top = (group / "memory.max").read_text(encoding="ascii").strip()
            used = int((group / "memory.current").read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        if top != "max":
            left = max(int(top) - used, 0)
            room = left if room is None else min(room, left)
    return room
