"""Predictors: arrays in, masks out. Submodules import torch; this package does not.

- :mod:`medseg.inference.device`: ``resolve_device("auto")``, precision choice, CPU allocator.
- :mod:`medseg.inference.litemedsam`: ``LiteMedSAMPredictor`` (box/point prompts on a slice
  stack, 3D propagation) and the MedSAM intensity/slice preprocessing.
"""
