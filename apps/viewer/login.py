"""``--auth``: one login in front of every route of the viewer's server, not only Gradio's own.

Gradio 6.31's ``auth`` guards the page config, the API info, event calls, uploads and files, but
answers ``/gradio_api/startup-events``, ``/gradio_api/app_id``, ``/gradio_api/cancel``,
``/gradio_api/reset``, ``/gradio_api/heartbeat/{session}`` (and its static and theme routes)
without a login, and its login page embeds the API schema of every endpoint (``window
.gradio_api_info``) that ``/gradio_api/info`` itself refuses. :class:`LoginRequired` is an ASGI
middleware installed on Gradio's FastAPI app (``launch(app_kwargs={"middleware": ...})``) that
answers **401** to every HTTP request and closes every websocket without a valid session cookie
(the token Gradio's ``POST /login`` sets, in either of its two cookies), except:

- ``GET``/``HEAD /``: medseg's own login form (:data:`LOGIN_PAGE`: no Gradio config, no API
  schema, no component or file names; it posts to Gradio's ``/login`` and reloads);
- ``POST /login``: Gradio's credential check (400 on a wrong password);
- ``GET /favicon.ico``;
- the one ``GET /gradio_api/startup-events`` that ``Blocks.launch`` makes to start the app
  (before it, the start-up events have not run; after it, the route needs the login too).

What ``--auth`` does **not** do: encrypt anything (plain HTTP: the password and the cookie cross
the network in clear text unless a TLS reverse proxy is in front; ``--host 0.0.0.0`` without TLS
exposes both); tell users apart (one shared user name and password; every logged-in user can
call every API endpoint, and a session cookie, not the login, keeps images apart); limit login
attempts (no lock-out or delay: use a strong password, or a proxy that rate-limits); expire a
login (tokens live in the server's memory until it stops; ``/logout`` ends them); protect the
files it serves from a logged-in user who knows their path (Gradio's file rules apply).
"""

from __future__ import annotations

from typing import Any

PUBLIC = {("POST", "/login"), ("POST", "/login/"), ("GET", "/favicon.ico")}

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medseg viewer: login</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:22em;margin:4em auto;padding:0 1em}
input,button{display:block;width:100%;margin:.4em 0;padding:.5em;box-sizing:border-box}
#msg{color:#b00}</style></head>
<body><h1>medseg viewer</h1><p>Research use only: not a medical device.</p>
<form id="login"><label>User <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
required></label><button type="submit">Log in</button><p id="msg" role="alert"></p></form>
<script>
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = new URLSearchParams(new FormData(event.target));
  const reply = await fetch("login", {method: "POST", body, credentials: "same-origin"});
  if (reply.ok) { window.location.reload(); }
  else { document.getElementById("msg").textContent = "Incorrect user or password."; }
});
</script></body></html>
"""


class LoginRequired:
    """ASGI middleware: a valid Gradio login cookie, or 401 (see the module docstring).

    The Gradio ``App`` is read from ``scope["app"]`` (Starlette sets it before the middleware
    stack), so this works on the app ``gradio.Blocks.launch`` creates.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or _logged_in(scope):
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), scope.get("path", "")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path == "/" and method in ("GET", "HEAD"):
            from starlette.responses import HTMLResponse

            await HTMLResponse(LOGIN_PAGE, headers={"Cache-Control": "no-store"})(
                scope, receive, send
            )
            return
        if (method, path) in PUBLIC or _first_startup_call(scope, path):
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        await JSONResponse({"detail": "Not authenticated"}, status_code=401)(scope, receive, send)


def _first_startup_call(scope: dict, path: str) -> bool:
    """``Blocks.launch`` itself calls ``startup-events`` once, without a cookie, to start the
    app; that one call passes (it only runs the start-up events, once), later ones need a login."""
    triggered = getattr(scope.get("app"), "startup_events_triggered", True)
    return path == "/gradio_api/startup-events" and not triggered


def _logged_in(scope: dict) -> bool:
    """Whether the request carries a token that Gradio's ``POST /login`` issued."""
    from starlette.requests import HTTPConnection

    app = scope.get("app")
    tokens = getattr(app, "tokens", None)
    cookie_id = getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return False
    cookies = HTTPConnection(scope).cookies
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        token = cookies.get(name)
        if token and tokens.get(token) is not None:
            return True
    return False
