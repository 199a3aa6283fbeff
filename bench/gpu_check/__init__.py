"""The one-command GPU check of issue 18: ``bench/gpu_check.sh`` (``python -m bench.gpu_check``).

``__main__``: the runner and the report; ``kernel_sections`` and ``app_sections``: the sections;
``deps``: the packages carried to the bare GPU machine; ``common``: what they share.
"""
