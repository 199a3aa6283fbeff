"""Attention kernels for medseg's models: torch reference (the spec), fast CPU paths, Triton.

Empty on purpose until the kernels issue lands: ``window_attention``, ``region_attention`` and
``linear_attention`` arrive there with their dispatcher (``impl="auto"|"torch"|"triton"``).
Note: PyPI has an unrelated distribution called ``kernels``; medseg never depends on it.
"""
