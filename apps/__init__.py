"""The Gradio viewer (``medseg view``) lands with the viewer issue; nothing here yet."""
