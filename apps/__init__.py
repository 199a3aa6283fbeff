"""Applications on top of the ``medseg`` library: the Gradio viewer (``apps.viewer``)."""
