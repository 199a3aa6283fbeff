"""medseg: medical image segmentation and restoration.

``import medseg`` is cheap by design: heavy dependencies (torch, SimpleITK, gradio, sam2) are
imported by the submodules that need them.
"""

__version__ = "0.1.0"
