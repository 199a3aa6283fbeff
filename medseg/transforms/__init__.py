"""Transforms medseg needs beyond MONAI: display planes (:mod:`.planes`), SAM-family prompt
geometry (:mod:`.prompts`), degradations and paired restoration data, intensity maps."""
