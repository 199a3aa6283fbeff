"""SAM-family options of ``medseg segment``: ``--model db_sam`` (box prompt, 3-D propagation,
through the LiteMedSAM machinery) and ``--model sam2_sgp --support DIR`` (prompt-free).

``--checkpoint`` is a ``medseg fit`` checkpoint of ``PromptableSegmentationTask`` (or a full
state dict of the published preset); it holds every weight, the original SAM/SAM2 file is not
needed. ``--support DIR`` holds image/label volume pairs (``images/`` + ``labels/`` with equal
names, or ``NAME.nii.gz`` + ``NAME_label.nii.gz``); the slices holding ``--support-label``
guide the segmentation (``--support-size`` of them per slice, the most similar), which writes
``--label``. Both models take single-channel volumes (nets fine-tuned on several channels are
refused with the reason). The checks and the runs live in :class:`medseg.api.Segmenter`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_sam_arguments"]


def add_sam_arguments(p: argparse.ArgumentParser) -> None:
    from medseg.api.segmenter import MODELS

    g = p.add_argument_group("SAM family (DB-SAM, SAM2-SGP)")
    g.add_argument(
        "--model",
        choices=MODELS,
        default="litemedsam",
        help="litemedsam (default), db_sam (box prompt + propagation; --checkpoint from medseg "
        "fit) or sam2_sgp (prompt-free with --support DIR)",
    )
    g.add_argument("--support", default=None, metavar="DIR", help="sam2_sgp: image/label pairs")
    g.add_argument(
        "--support-label",
        type=int,
        default=1,
        metavar="L",
        help="label value of the object in --support",
    )
    g.add_argument(
        "--support-size",
        type=int,
        default=None,
        metavar="K",
        help="sam2_sgp: supports chosen per slice (most similar first; default: the model's, "
        "1 in 2-D training, 4 in 3-D)",
    )
    g.add_argument(
        "--bank-size",
        type=int,
        default=16,
        metavar="N",
        help="sam2_sgp: memories of previous slices kept while propagating (0 = 2-D per slice)",
    )
