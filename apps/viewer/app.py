"""``build_app(...) -> gr.Blocks``: the page layout and which callback each control runs.

Layout: controls on the left (open, window/level, overlay, prompt tools, models, export), the
three planes with their slice sliders on the right, then the crosshair read-out, the
before/after row (only with a restoration model) and the statistics table.

All per-user state lives in one ``gr.State`` holding a :class:`~apps.viewer.state.Session`.
Model events share one concurrency group (``model_concurrency`` at a time); display events
re-render from cached arrays and never touch a model.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from medseg.api.exports import FORMATS as EXPORT_FORMATS
from medseg.errors import MedsegError
from medseg.transforms.planes import AXES
from medseg.viz import WINDOW_PRESETS

from . import callbacks as cb
from . import render
from .launch import private_temp_dir
from .models import ModelHub
from .opening import CT_MIN_HU
from .state import MODES, Session, discard, new_session

DISCLAIMER = "**Research use only: not a medical device.** Do not use for diagnosis or treatment."
FILE_TYPES = [".nii", ".gz", ".nrrd", ".mha", ".mhd", ".zip", ".png", ".jpg", ".jpeg"]
PRESET_LABELS = [("auto (percentiles)", "auto")] + [
    (f"{k.replace('_', ' ')} {w:g}/{lv:g}", k) for k, (lv, w) in WINDOW_PRESETS.items()
]
PRESET_LABELS.append(("manual", "manual"))
MR_PRESETS = [PRESET_LABELS[0], PRESET_LABELS[-1]]  # HU presets mean nothing on MR


#: a typed level/width is clamped into its slider's range (the image's own range: Gradio
#: would refuse a value outside it with a validation error) and applies on Enter as on leaving
#: the box (Gradio applies it on blur only)
WINDOW_TYPING = """() => {
  const boxes = "#level input[type=number], #width input[type=number]";
  const clamp = (box) => {
    const value = parseFloat(box.value), lo = parseFloat(box.min), hi = parseFloat(box.max);
    const within = Math.min(Math.max(value, isNaN(lo) ? value : lo), isNaN(hi) ? value : hi);
    if (!isNaN(value) && within !== value) {
      box.value = String(within);
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
  };
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && e.target.matches && e.target.matches(boxes)) {
      clamp(e.target);
      e.target.blur();
    }
  }, true);
  document.addEventListener("blur", (e) => {
    if (e.target.matches && e.target.matches(boxes)) clamp(e.target);
  }, true);
}"""


def _within(value: float, limits: dict[str, float]) -> float:
    """``value`` clipped into a slider's range (a slider refuses a value outside it)."""
    return float(min(max(value, limits["minimum"]), limits["maximum"]))


SESSION_TTL_S = 4 * 3600


def build_app(
    path: str | os.PathLike[str] | None = None,
    *,
    hub: ModelHub | None = None,
    root: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    size: int = 384,
    model_concurrency: int = 1,
    delete_cache: tuple[int, int] | None = (600, 3600),
) -> gr.Blocks:
    """The viewer app.

    Args:
        path: image opened in every new session (read once here; an unreadable file raises
            ``InputError`` now, not per user).
        hub: models (LiteMedSAM, segmenters, restorers); default the shipped LiteMedSAM and
            the classical denoiser (``apps.viewer.models.DEFAULT_RESTORER``, no checkpoint).
        root: folder whose files users may open by typing a server-side path (off if None).
        workdir: private folder for extracted zips and exports (default inside
            ``GRADIO_TEMP_DIR``, so exports are downloadable and cleaned by ``delete_cache``).
            ``GRADIO_TEMP_DIR`` itself becomes a new 0700 folder when it is not set.
        size: rendered length (pixels) of the longer side of each plane.
        model_concurrency: model events running at once across all users.
        delete_cache: ``(every, older_than)`` seconds for Gradio's cache cleaning.
    """
    temp = private_temp_dir()  # components cache their files here: set it before creating them
    hub = hub or ModelHub()
    work = Path(workdir) if workdir else temp / "medseg"
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    initial = None
    if path is not None:
        initial = cb.open_file.__wrapped__(str(path), str(work))  # InputError, not gr.Error
    root_text = None if root is None else str(Path(root).resolve())

    with gr.Blocks(title="medseg viewer", delete_cache=delete_cache) as demo:
        # a session idle for SESSION_TTL_S is dropped; its files go with it
        state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=discard)
        gr.Markdown(f"## medseg viewer\n{DISCLAIMER}", elem_id="disclaimer")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="Open image", file_types=FILE_TYPES, type="filepath",
                                 height=140, elem_id="open-image")  # fmt: skip
                label_upload = gr.File(label="Open labels (same grid) or dataset.json",
                                       type="filepath", height=140,
                                       elem_id="open-labels")  # fmt: skip
                with gr.Row(visible=root_text is not None):
                    server_path = gr.Textbox(label=f"Server path under {root_text}", scale=3)
                    open_path = gr.Button("Open", scale=1)
                channel = gr.Dropdown([0], value=0, label="Channel", visible=False)
                with gr.Accordion("Window / level", open=True):
                    preset = gr.Dropdown(PRESET_LABELS, value="auto", label="Preset",
                                         elem_id="preset")  # fmt: skip
                    level = gr.Slider(-1024, 3071, value=40, label="Level", elem_id="level")
                    width = gr.Slider(1, 4096, value=400, label="Width", elem_id="width")
                with gr.Accordion("Overlay and zoom", open=False):
                    opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Opacity")
                    outline = gr.Checkbox(label="Outline only")
                    hidden = gr.CheckboxGroup(label="Hide labels", choices=[])
                    zoom = gr.Slider(1, 8, value=1, step=0.5, label="Zoom (centred on crosshair)")
                legend = gr.HTML(elem_id="legend")
                with gr.Accordion("Prompt (LiteMedSAM)", open=True):
                    mode = gr.Radio(list(MODES), value="crosshair", label="Click does",
                                    elem_id="mode")  # fmt: skip
                    with gr.Row():
                        object_dd = gr.Dropdown(label="Object", choices=[], scale=2)
                        object_name = gr.Textbox(label="New object name", scale=2)
                    new_obj = gr.Button("New object")
                    each_way = gr.Number(15, label="Propagate slices each way", precision=0)
                    with gr.Row():
                        propagate_btn = gr.Button("Propagate", variant="primary")
                        undo_btn = gr.Button("Undo")
                        reset_btn = gr.Button("Reset")
                    prompt_box = gr.Textbox(label="Typed prompt",
                                            placeholder="axial 12 box 10 20 60 80")  # fmt: skip
                    prompt_btn = gr.Button("Apply typed prompt")
                with gr.Accordion("Models", open=bool(hub.segmenters or hub.restorers),
                                  visible=bool(hub.segmenters or hub.restorers)):  # fmt: skip
                    seg_dd = gr.Dropdown(list(hub.segmenters), label="Segmentation model",
                                         value=next(iter(hub.segmenters), None))  # fmt: skip
                    seg_btn = gr.Button("Segment automatically", visible=bool(hub.segmenters))
                    res_dd = gr.Dropdown(list(hub.restorers), label="Restoration model",
                                         value=next(iter(hub.restorers), None))  # fmt: skip
                    res_btn = gr.Button("Restore", visible=bool(hub.restorers))
                export_formats = gr.CheckboxGroup(
                    list(EXPORT_FORMATS), value=["nifti"], elem_id="export-formats",
                    label="Label formats (dicom-seg, rtstruct: DICOM images only)",
                )  # fmt: skip
                export_btn = gr.Button("Export labels + statistics (+ restored)", elem_id="export")
                export_files = gr.File(label="Exports", file_count="multiple",
                                       elem_id="exports")  # fmt: skip
            with gr.Column(scale=3):
                images, sliders = {}, {}
                with gr.Row():
                    for axis in AXES:
                        with gr.Column(min_width=200):
                            images[axis] = gr.Image(
                                label=axis, type="numpy", format="png", interactive=False,
                                buttons=["download", "fullscreen"], elem_id=f"plane-{axis}",
                            )  # fmt: skip
                            sliders[axis] = gr.Slider(0, 1, step=1, value=0,
                                                      label=f"{axis} slice",
                                                      elem_id=f"slice-{axis}")  # fmt: skip
                info = gr.Markdown(elem_id="info")
                status = gr.Markdown(elem_id="status")
                with gr.Row(visible=False) as compare_row:
                    before = gr.Image(label="before", format="png", interactive=False)
                    after = gr.Image(label="after (restored)", format="png", interactive=False)
                stats = gr.Dataframe(headers=render.STATS_HEADERS, label="Statistics",
                                     interactive=False, elem_id="stats")  # fmt: skip

        view_out = [state, *images.values(), *sliders.values(), info, before, after]
        full_out = [*view_out, legend, hidden, object_dd, stats, status, compare_row,
                    level, width, preset, channel]  # fmt: skip

        def view(session: Session | None) -> list:
            if session is None:
                return [None] * 4 + [gr.update()] * 3 + ["", None, None]
            pictures = [
                render.picture_file(session, a, p, work)
                for a, p in render.render_all(session).items()
            ]
            ups = [
                gr.update(maximum=max(session.views[a].num_slices - 1, 1),
                          value=session.slice_of(a), label=render.plane_title(session, a))
                for a in AXES
            ]  # fmt: skip
            b, a = render.compare_pictures(session)
            if b is not None:
                b, a = (
                    render.picture_file(session, "before", b, work),
                    render.picture_file(session, "after", a, work),
                )
            return [session, *pictures, *ups, render.info_text(session), b, a]

        def full(session: Session | None, message: str = "") -> list:
            if session is None:
                return view(None) + [""] + [gr.update()] * 3 + [message] + [gr.update()] * 5
            choices = render.label_choices(session)
            lo, hi = session.value_range()
            ct = lo < CT_MIN_HU  # presets in HU only where the image is in HU
            limits = render.window_limits(lo, hi, ct)
            rows = render.stats_rows(render.statistics(session))
            return view(session) + [
                render.legend_html(session),
                gr.update(choices=choices),
                gr.update(choices=[c for c in choices if c[1] in session.objects],
                          value=session.active),
                rows,
                message,
                gr.update(visible=session.restored is not None),
                gr.update(**limits["level"], value=_within(session.window[0], limits["level"])),
                gr.update(**limits["width"], value=_within(session.window[1], limits["width"])),
                gr.update(choices=PRESET_LABELS if ct else MR_PRESETS, value=session.preset),
                gr.update(choices=list(range(session.source.num_channels)),
                          value=session.channel, visible=session.source.num_channels > 1),
            ]  # fmt: skip

        # opening -------------------------------------------------------------------------------
        def on_load():
            if initial is None:
                return full(None, "Open an image to start.")
            try:  # the memory budget may be spent (apps.viewer.budget)
                session = new_session(initial.source, initial.name, names=dict(initial.names),
                                      window=initial.window, preset=initial.preset)  # fmt: skip
            except MedsegError as err:
                return full(None, str(err))
            session.size = size
            return full(session, f"opened {initial.name}")

        def on_open(file_path, old):
            session = cb.open_file(file_path, str(work))
            discard(old)  # the previous image's pictures and exports
            session.size = size
            return full(session, f"opened {session.name}")

        def on_open_path(text, old):
            session = cb.open_server_path(text, root_text, str(work))
            discard(old)
            session.size = size
            return full(session, f"opened {session.name}")

        demo.load(on_load, None, full_out, api_visibility="private")
        demo.load(None, None, None, js=WINDOW_TYPING)
        upload.upload(on_open, [upload, state], full_out, api_name="open")
        open_path.click(on_open_path, [server_path, state], full_out, api_name="open_path")
        label_upload.upload(lambda s, p: full(s, cb.open_label_file(s, p)), [state, label_upload],
                            full_out, api_name="open_labels")  # fmt: skip

        # display (no model) ------------------------------------------------------------------
        for axis in AXES:
            sliders[axis].input(
                lambda s, v, _a=axis: (cb.set_slice(s, _a, v), view(s))[1],
                [state, sliders[axis]], view_out, trigger_mode="always_last",
                show_progress="hidden", api_name=f"slice_{axis}",
            )  # fmt: skip

        def on_preset(s, name):
            window = cb.set_preset(s, name)
            return [*view(s), window[0], window[1]]

        preset.input(on_preset, [state, preset], [*view_out, level, width], api_name="preset")
        for slider in (level, width):
            slider.release(lambda s, lv, w: (cb.set_window(s, lv, w), [*view(s), "manual"])[1],
                           [state, level, width], [*view_out, preset],
                           show_progress="hidden", api_visibility="undocumented")  # fmt: skip
        style_in = [state, zoom, opacity, outline, hidden]
        for control in (zoom, opacity, outline, hidden):
            control.input(lambda s, z, o, ol, h: (cb.set_view(s, z, o, ol, h), view(s))[1],
                          style_in, view_out, trigger_mode="always_last",
                          show_progress="hidden", api_visibility="undocumented")  # fmt: skip

        channel.input(lambda s, c: full(s, cb.set_channel(s, int(c)) or f"channel {c}"),
                      [state, channel], full_out, api_name="channel")  # fmt: skip

        def on_mode(s, m):
            if s is not None:
                s.mode, s.pending = m, None
            return [*view(s), f"click mode: {m}"]

        mode.input(on_mode, [state, mode], [*view_out, status], api_name="mode")

        # prompts and models --------------------------------------------------------------------
        model = {"concurrency_id": "model", "concurrency_limit": model_concurrency}
        for axis in AXES:

            def on_click(s, m, evt: gr.SelectData, _a=axis):
                if s is not None and s.mode != m:  # the radio's value as the user saw it
                    s.mode, s.pending = m, None
                x, y = evt.index[:2]
                return full(s, cb.click(s, _a, float(x), float(y), hub))

            images[axis].select(on_click, [state, mode], full_out, api_visibility="undocumented",
                                **model)  # fmt: skip
        prompt_btn.click(lambda s, t: full(s, cb.prompt_text(s, t, hub)), [state, prompt_box],
                         full_out, api_name="prompt", **model)  # fmt: skip

        def on_propagate(s, n, progress=gr.Progress()):
            return full(s, cb.propagate(s, hub, int(n or 0), progress))

        propagate_btn.click(on_propagate, [state, each_way], full_out, api_name="propagate",
                            **model)  # fmt: skip
        new_obj.click(lambda s, n: full(s, cb.new_object(s, n)), [state, object_name], full_out,
                      api_name="new_object")  # fmt: skip
        object_dd.input(lambda s, v: (cb.select_object(s, v), full(s))[1], [state, object_dd],
                        full_out, api_visibility="undocumented")  # fmt: skip
        undo_btn.click(lambda s: full(s, cb.undo(s)), state, full_out, api_name="undo")
        reset_btn.click(lambda s: full(s, cb.reset(s)), state, full_out, api_name="reset")
        seg_btn.click(lambda s, n: full(s, cb.auto_segment(s, hub, n)), [state, seg_dd],
                      full_out, api_name="segment", **model)  # fmt: skip
        res_btn.click(lambda s, n: full(s, cb.restore(s, hub, n)), [state, res_dd], full_out,
                      api_name="restore", **model)  # fmt: skip
        export_btn.click(lambda s, f: (cb.export(s, str(work), f or ["nifti"]), "exported"),
                         [state, export_formats], [export_files, status],
                         api_name="export")  # fmt: skip
    return demo
