"""Serving the viewer safely: private temp dir, bounded queue, upload limit, auth, localhost.

``private_temp_dir()`` must run before Gradio is imported for the first time in the process
(some Gradio modules read ``GRADIO_TEMP_DIR`` at import); ``medseg view`` does that.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DEFAULT_MAX_FILE_SIZE = "1gb"


def private_temp_dir() -> Path:
    """Point ``GRADIO_TEMP_DIR`` at a new 0700 folder of this process (unless already set)."""
    current = os.environ.get("GRADIO_TEMP_DIR")
    if current:
        path = Path(current)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
    path = Path(tempfile.mkdtemp(prefix="medseg-viewer-"))  # mkdtemp creates it 0700
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return path


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ``("user", "pass")``; ValueError when malformed."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth needs USER:PASSWORD")
    return user, password


def launch(
    demo,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: tuple[str, str] | None = None,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    max_queue: int = 16,
    concurrency: int = 4,
    max_sessions: int = 32,
    block: bool = True,
):
    """Queue and launch ``demo`` (``gr.Blocks``); returns ``(app, local_url, share_url)``.

    Safe defaults: binds ``host`` (127.0.0.1 unless told otherwise), no share link, no
    monitoring page, no MCP server, no browser run history, a bounded queue of ``max_queue``
    waiting events, ``concurrency`` display events at once, ``max_file_size`` uploads, and at
    most ``max_sessions`` sessions in memory (the oldest is dropped; a session holds its label
    map and up to 32 slice embeddings, tens to hundreds of MB; the memory budget of
    :mod:`apps.viewer.budget` refuses sessions that would not fit). With ``auth``, every route
    needs the login (:mod:`apps.viewer.login`, which also lists what it does not protect).
    """
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    app_kwargs = None
    if auth is not None:  # Gradio's auth leaves routes open and the login page carries the schema
        from starlette.middleware import Middleware

        from .login import LoginRequired

        app_kwargs = {"middleware": [Middleware(LoginRequired)]}
    return demo.launch(
        app_kwargs=app_kwargs,
        server_name=host,
        server_port=port,
        auth=auth,
        share=False,
        max_file_size=max_file_size,
        enable_monitoring=False,
        mcp_server=False,
        run_history=False,
        show_error=False,
        state_session_capacity=max_sessions,
        prevent_thread_lock=not block,
        quiet=not block,
        footer_links=[],
    )
