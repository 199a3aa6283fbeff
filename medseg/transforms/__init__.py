"""Transforms medseg needs beyond MONAI: display planes now; prompts and degradations later."""
