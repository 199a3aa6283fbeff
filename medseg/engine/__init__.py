"""LightningModules ("tasks"): they own losses, metrics and optimisers; nets are injected."""

from medseg.engine.promptable import PromptableSegmentationTask
from medseg.engine.restoration import AdversarialRestorationTask, RestorationTask
from medseg.engine.segmentation import NonFiniteLossError, SegmentationTask

__all__ = [
    "AdversarialRestorationTask",
    "NonFiniteLossError",
    "PromptableSegmentationTask",
    "RestorationTask",
    "SegmentationTask",
]
