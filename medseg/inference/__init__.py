"""Predictors: arrays in, masks out. Submodules import torch; this package does not.

- :mod:`medseg.inference.device`: ``resolve_device("auto")`` (defined in
  :mod:`medseg.models.device`), precision choice, CPU allocator.
- :mod:`medseg.inference.litemedsam`: ``LiteMedSAMPredictor`` (box/point prompts on a slice
  stack, 3D propagation) and the MedSAM intensity/slice preprocessing.
- :mod:`medseg.inference.checkpoints`: ``medseg fit`` checkpoints (file and integrity checks,
  the task loaders); the only module here that imports :mod:`medseg.engine`.
"""
