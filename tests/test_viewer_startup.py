"""What ``medseg view`` promises before and at start-up (issue 15, item 7): every checkpoint is
loaded and checked before serving (a bad one exits 4 in one line), and with ``--auth`` every
route of the real server on 127.0.0.1 needs the login, and the login page carries no schema.
About 10 s (one server)."""

from __future__ import annotations

import re

import httpx
import pytest
import torch
from viewer_kit import free_port

from medseg.cli.main import main

USER, PASSWORD = "doctor", "s3cret"
ISSUE_ROUTES = [  # answered 200 without a login before (gradio 6.31)
    ("GET", "/gradio_api/startup-events"),
    ("GET", "/gradio_api/app_id"),
    ("POST", "/gradio_api/cancel"),
    ("POST", "/gradio_api/reset"),
    ("GET", "/gradio_api/heartbeat/abc123"),
]
PUBLIC = {("POST", "/login"), ("POST", "/login/"), ("GET", "/favicon.ico"), ("GET", "/"),
          ("HEAD", "/")}  # fmt: skip


class Payload:
    """Pickles to a call of ``print``: not a state dict; ``weights_only`` must refuse it."""

    def __reduce__(self):
        return (print, ("this code ran",))


@pytest.fixture
def no_serving(monkeypatch):
    """Fail instead of serving if a bad checkpoint got past start-up."""
    import sys

    import apps.viewer.launch  # noqa: F401 - the module, not the function apps.viewer exports

    started = []
    monkeypatch.setattr(
        sys.modules["apps.viewer.launch"], "launch", lambda *a, **k: started.append(1)
    )
    return started


@pytest.mark.parametrize("kind", ["pickle_payload", "wrong_keys", "not_torch"])
def test_view_checks_every_checkpoint_before_serving(tmp_path, capsys, no_serving, kind):
    bad = tmp_path / "evil.pth"
    if kind == "pickle_payload":
        torch.save(Payload(), bad)
        words = "refused: the file needs arbitrary pickle code"
    elif kind == "wrong_keys":
        torch.save({"encoder.weight": torch.zeros(2)}, bad)
        words = "not a LiteMedSAM checkpoint"
    else:
        bad.write_bytes(b"\x80\x04K\x01.")  # a bare pickle, no torch zip
        words = "not a torch checkpoint"
    assert main(["view", "--checkpoint", str(bad), "--port", str(free_port())]) == 4
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: ") and words in err[0], err
    assert "this code ran" not in out.out and not no_serving


# --auth ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    import os

    from apps.viewer import ModelHub, build_app
    from apps.viewer.launch import launch

    temp = tmp_path_factory.mktemp("gradio")
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(temp)
    demo = build_app(hub=ModelHub(device="cpu"))
    port = free_port()
    try:
        app, _, _ = launch(demo, port=port, auth=(USER, PASSWORD), block=False)
        yield app, f"http://127.0.0.1:{port}"
    finally:
        demo.close()
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous


def _routes(app) -> list[tuple[str, str]]:
    """Every (method, concrete path) the server registered, routers included (FastAPI 0.165
    keeps an included router as one ``_IncludedRouter`` entry); path parameters filled in."""
    found: set[tuple[str, str]] = set()

    def walk(routes, prefix: str) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes, prefix + route.include_context.prefix)
                continue
            path = getattr(route, "path", None)
            if path is None:
                continue
            concrete = re.sub(r"\{[^}]+\}", "x1", prefix + path)
            found.update((m, concrete) for m in getattr(route, "methods", None) or {"GET"})

    walk(app.routes, "")
    return sorted(found)


def _status(http: httpx.Client, method: str, url: str) -> int:
    with http.stream(method, url) as response:  # streams (heartbeat, queue data) never end
        return response.status_code


def test_every_route_needs_the_login(auth_server):
    app, url = auth_server
    routes = _routes(app)
    assert {(m, p.replace("abc123", "x1")) for m, p in ISSUE_ROUTES} <= set(routes)
    assert len(routes) > 60  # the real route table (Gradio 6.31 registers about 90)
    with httpx.Client(timeout=10) as http:
        for method, path in routes:
            if (method, path) in PUBLIC:
                continue
            assert _status(http, method, url + path) == 401, (method, path)
        for method, path in ISSUE_ROUTES:
            assert _status(http, method, url + path) == 401, (method, path)
        # the login page: our form, no Gradio config or API schema
        page = http.get(url + "/")
        assert page.status_code == 200 and 'name="password"' in page.text
        for secret in ("gradio_api_info", "gradio_config", "open_path", "api_name", "/open"):
            assert secret not in page.text, secret
        assert http.post(url + "/login", data={"username": USER, "password": "no"}).status_code
        assert http.get(url + "/config").status_code == 401


def test_the_login_opens_every_route(auth_server):
    app, url = auth_server
    with httpx.Client(timeout=10) as http:
        login = http.post(url + "/login", data={"username": USER, "password": PASSWORD})
        assert login.status_code == 200
        for method, path in ISSUE_ROUTES:
            assert _status(http, method, url + path) != 401, (method, path)
        assert http.get(url + "/config").status_code == 200
        assert http.get(url + "/gradio_api/info").status_code == 200
        page = http.get(url + "/")
        assert page.status_code == 200 and "gradio_config" in page.text  # the real app
    with httpx.Client(timeout=10) as other:  # another client without the cookie: still locked
        assert _status(other, "GET", url + "/gradio_api/app_id") == 401
