"""The viewer's memory budget: one per process, over every open image and session.

Up to ``--max-sessions`` sessions (32 by default) can each open a 2 GiB volume; without a budget
a handful of users exhaust the server's RAM. So every image and every session *reserves* its
estimate (:mod:`medseg.inference.memory`) before it is created, and gives it back when it is
garbage collected (a session dropped by Gradio, replaced by a new file, or expired):

- opening a file: the session's whole estimate (``viewer_session_need``: loading peak, image,
  labels, undo copies, display stack, embedding cache) must fit *before the file is
  decompressed* (``load_volume``'s ``on_header``); the image then holds ``4 x C x V`` bytes;
- a new session (also on the image given on the command line): ``32 V`` + its embedding cache.

The budget is ``MEDSEG_MAX_MEMORY`` when set, else the memory available when the first
reservation is made; a reservation must also fit in what is available at that moment (unless
``MEDSEG_MAX_MEMORY`` is set). A refusal is one line (``not_enough_memory``) saying what to do.
"""

from __future__ import annotations

import os
import threading
import weakref

from medseg.errors import InputError
from medseg.inference.memory import GIB, MEMORY_ENV, available_memory, memory_limit

FIX = "close other viewer tabs or open a smaller image (MEDSEG_MAX_MEMORY sets the budget)"


class Reservation:
    """Bytes held in a :class:`MemoryBudget` until :meth:`release` (idempotent) or until the
    object passed to :meth:`bind` is garbage collected."""

    def __init__(self, budget: MemoryBudget, nbytes: int) -> None:
        self.budget, self.nbytes = budget, int(nbytes)
        self._released = False

    def bind(self, owner: object) -> None:
        """Release when ``owner`` is garbage collected."""
        weakref.finalize(owner, self.release)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.budget._give_back(self.nbytes)


class MemoryBudget:
    """Reservations against one limit (``limit=None``: :func:`memory_limit` at first use)."""

    def __init__(self, limit: int | None = None) -> None:
        self._limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def limit(self) -> int | None:
        if self._limit is None:
            self._limit = memory_limit()
        return self._limit

    @property
    def used(self) -> int:
        return self._used

    def check(self, need: int, *, what: str, path: str | None = None) -> None:
        """Refuse (``not_enough_memory``) when ``need`` does not fit now; reserves nothing."""
        with self._lock:
            self._refuse_unless_fits(need, what, path)

    def reserve(self, need: int, *, what: str, path: str | None = None) -> Reservation:
        """Hold ``need`` bytes, or refuse (``not_enough_memory``) when they do not fit."""
        with self._lock:
            self._refuse_unless_fits(need, what, path)
            self._used += int(need)
        return Reservation(self, need)

    def reset(self, limit: int | None = None) -> None:
        """Forget every reservation and set a new limit (tests; a fresh app)."""
        with self._lock:
            self._limit, self._used = limit, 0

    def _refuse_unless_fits(self, need: int, what: str, path: str | None) -> None:
        limit = self.limit
        if limit is None:
            return
        room = limit - self._used
        live = None if os.environ.get(MEMORY_ENV, "").strip() else available_memory()
        if need <= room and (live is None or need <= live):
            return
        left = max(room if live is None else min(room, live), 0)
        raise InputError(
            "not_enough_memory",
            f"not enough memory: {what} needs about {_gib(need)} GiB, {_gib(left)} GiB left of "
            f"the viewer's {_gib(limit)} GiB budget; {FIX}",
            path=path,
        )

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._used = max(self._used - int(nbytes), 0)


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


BUDGET = MemoryBudget()  # the process's budget, shared by every app built in it
