"""``medseg view``: the Gradio viewer in the browser (three planes, window/level, overlays,
LiteMedSAM click/box prompts, automatic segmentation, restoration shown before | after, export).
Research use, not a medical device.

Binds 127.0.0.1 unless ``--host`` says otherwise; ``--auth USER:PASS`` puts a login in front of
every page, API call and file. Uploads go to a private 0700 temp folder that Gradio cleans
(``delete_cache``); server-side paths are allowed only under ``--root``.
"""

from __future__ import annotations

import argparse


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "view",
        parents=parents,
        help="open the viewer in the browser (Gradio, 127.0.0.1 by default)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", nargs="?", help="image opened in every new session (optional)")
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="CKPT",
                   help="LiteMedSAM weights (.pth state dict) and/or `medseg fit` segmentation "
                   "or restoration checkpoints (.ckpt)")  # fmt: skip
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints holding arbitrary pickled objects (trusted sources "
                   "only)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860+)")
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="allow opening server-side files under DIR by path")  # fmt: skip
    p.add_argument("--max-file-size", default="1gb", help="upload limit (default 1gb)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--runtime", default="auto", choices=("auto", "torch", "openvino"),
                   help="LiteMedSAM encoder runtime (auto = torch)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is faster on a busy host)")  # fmt: skip
    p.add_argument("--max-sessions", type=int, default=32,
                   help="sessions kept in memory; the oldest is dropped (default 32)")  # fmt: skip
    p.add_argument("--model-concurrency", type=int, default=1,
                   help="model runs at once across users (default 1)")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    import shutil
    from pathlib import Path

    from apps.viewer.launch import parse_auth, private_temp_dir
    from medseg.errors import InputError

    try:
        auth = parse_auth(args.auth)
    except ValueError as err:
        raise InputError("bad_argument", str(err)) from None
    if args.root is not None and not Path(args.root).is_dir():
        raise InputError("not_found", "--root is not a folder", path=args.root)
    ours = not os.environ.get("GRADIO_TEMP_DIR")
    temp = private_temp_dir()  # before Gradio is imported
    try:
        return _serve(args, auth, temp)
    finally:
        if ours:  # uploads and exports of this run: gone when it stops
            shutil.rmtree(temp, ignore_errors=True)


def _serve(args: argparse.Namespace, auth: tuple[str, str] | None, temp) -> int:
    from apps.viewer.app import build_app
    from apps.viewer.launch import launch
    from apps.viewer.models import hub_from_checkpoints

    hub = hub_from_checkpoints(
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        runtime=args.runtime,
        threads=args.threads,
        trusted=args.trust_checkpoint,
    )
    demo = build_app(args.path, hub=hub, root=args.root,
                     model_concurrency=args.model_concurrency)  # fmt: skip
    if not args.quiet:
        where = f"http://{args.host}:{args.port or 7860}"
        print(f"medseg viewer on {where} (temp files in {temp}); research use, not a medical "
              "device. Ctrl+C stops it.")  # fmt: skip
    try:
        launch(demo, host=args.host, port=args.port, auth=auth,
               max_file_size=args.max_file_size, max_sessions=args.max_sessions)  # fmt: skip
    finally:
        demo.close()
    return 0
