"""Raw MSD / ACDC downloads -> dataset.json, splits.json, fingerprint.json.

Lands with the training issue (``medseg prepare``); nothing here yet.
"""
