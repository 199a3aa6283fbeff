"""The viewer in headless Chromium (Debian ``chromium`` driven by Playwright; no browser
download): open a volume, move a slider, see only the presets that fit it, draw a box, see
the mask, propagate it, correct a propagated slice with a negative click, export; on an image
scaled 0-1, type a window level (Enter applies it, a value past the range is clamped).

Screenshots go to ``$MEDSEG_TEST_ARTIFACTS/viewer`` (default: a pytest temp folder, printed).
Marked ``browser``; skipped when Playwright or Chromium is missing. About 1 minute.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from viewer_kit import SHAPE, axial_box, serve, write_scan

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword)"),
]
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = (
    os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    base = os.environ.get("MEDSEG_TEST_ARTIFACTS")
    folder = Path(base) / "viewer" if base else tmp_path_factory.mktemp("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder


def orange_pixels(png: bytes) -> int:
    """Pixels tinted by label 1's colour (230, 159, 0) but not the yellow crosshair."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r - b > 60) & (g - b < 150) & (r - g > 20)).sum())


def wait_for_picture(page, selector: str) -> None:
    """Wait until the plane's ``<img>`` has finished loading its current picture."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s + ' img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
    )


def press_until(page, slider, key: str, text: str, tries: int = 3) -> None:
    """Press ``key`` on ``slider`` until the page shows ``text`` (a re-render right after
    opening can take the focus away, and the key press is then lost)."""
    value = text.split()[1]
    for _ in range(tries):
        if slider.input_value() != value:
            slider.focus()
            page.keyboard.press(key)
        try:
            page.get_by_text(text).wait_for(timeout=15_000)
            return
        except sync_api.TimeoutError:
            continue
    page.get_by_text(text).wait_for()


def open_page(pw, url: str):
    """Headless Chromium at 1600x1200 on ``url``: ``(browser, page)``."""
    browser = pw.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
    )
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return browser, page


def click_picture(page, selector: str, x: float, y: float) -> None:
    """Click picture pixel ``(x, y)`` of the ``<img>`` in ``selector`` (as Gradio maps it back:
    the picture is scaled down to fit, never up, and centred)."""
    img = page.locator(f"{selector} img")
    box = img.bounding_box()
    nw, nh = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    scale = min(box["width"] / nw, box["height"] / nh, 1.0)
    left = box["x"] + (box["width"] - nw * scale) / 2
    top = box["y"] + (box["height"] - nh * scale) / 2
    page.mouse.click(left + (x + 0.5) * scale, top + (y + 0.5) * scale)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_open_scroll_preset_box_mask_export(tmp_path, artifacts):
    from apps.viewer import ModelHub, build_app
    from medseg.transforms.planes import PlaneView
    from medseg.viz import Viewport

    scan, mask, _ = write_scan(tmp_path)
    with (
        serve(lambda: build_app(hub=ModelHub(device="cpu")), temp_dir=tmp_path / "g") as url,
        sync_api.sync_playwright() as pw,
    ):
        browser, page = open_page(pw, url)
        page.get_by_text("not a medical device").first.wait_for()

        # open a volume
        page.locator("#open-image input[type=file]").set_input_files(str(scan))
        page.get_by_text("opened scan").wait_for()
        page.locator("#plane-axial img").wait_for()
        page.screenshot(path=str(artifacts / "1-opened.png"), full_page=True)

        # move the axial slider one slice down and back
        mid = SHAPE[2] // 2
        wait_for_picture(page, "#plane-axial")
        slider = page.locator("#slice-axial input[type=range]")
        press_until(page, slider, "ArrowLeft", f"Axial {mid - 1} / {SHAPE[2] - 1}")
        page.screenshot(path=str(artifacts / "2-slider.png"), full_page=True)
        press_until(page, slider, "ArrowRight", f"Axial {mid} / {SHAPE[2] - 1}")

        # window presets: this image is not in HU, so only auto and manual are offered
        page.locator("#preset input").click()
        page.get_by_role("option", name="manual").wait_for()
        assert page.get_by_role("option", name="bone 2500/480").count() == 0
        page.keyboard.press("Escape")
        page.screenshot(path=str(artifacts / "3-window.png"), full_page=True)
        before = orange_pixels(page.locator("#plane-axial img").screenshot())

        # draw a box with two clicks, see the mask
        page.locator("#mode").get_by_text("box", exact=True).click()
        page.get_by_text("click mode: box").wait_for()
        wait_for_picture(page, "#plane-axial")
        view = PlaneView.from_affine(np.eye(4), SHAPE, "axial")
        vp = Viewport.fit(view.height, view.width, view.pixel_spacing, size=384)
        x0, y0, x1, y1 = axial_box(mask)
        click_picture(page, "#plane-axial", *vp.to_image(y0, x0))
        page.get_by_text("click the opposite corner").wait_for()
        wait_for_picture(page, "#plane-axial")
        click_picture(page, "#plane-axial", *vp.to_image(y1, x1))
        page.locator("#stats span", has_text="object 1").first.wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / "4-mask.png"), full_page=True)
        after = orange_pixels(page.locator("#plane-axial img").screenshot())
        assert before < 50 and after > 500 + before, (before, after)

        # propagate, then correct a propagated slice with a negative click inside the object
        page.get_by_role("button", name="Propagate").click()
        page.get_by_text("propagated over").first.wait_for()
        press_until(page, slider, "ArrowLeft", f"Axial {mid - 1} / {SHAPE[2] - 1}")
        wait_for_picture(page, "#plane-axial")
        propagated = orange_pixels(page.locator("#plane-axial img").screenshot())
        page.locator("#mode").get_by_text("point -", exact=True).click()
        page.get_by_text("click mode: point -").wait_for()
        wait_for_picture(page, "#plane-axial")
        click_picture(page, "#plane-axial", *vp.to_image((y0 + y1) / 2, (x0 + x1) / 2))
        page.get_by_text(f"corrected axial slice {mid - 1}").first.wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / "4b-corrected.png"), full_page=True)
        corrected = orange_pixels(page.locator("#plane-axial img").screenshot())
        assert propagated > 500 and corrected < propagated, (propagated, corrected)

        # export
        page.locator("#export").click()
        page.locator('#exports td[aria-label="scan_labels.nii.gz"]').wait_for()
        page.screenshot(path=str(artifacts / "5-exported.png"), full_page=True)
        link = page.locator('#exports a[download="scan_labels.nii.gz"]').get_attribute("href")
        download = page.request.get(link)
        assert download.status == 200 and download.body()[:2] == b"\x1f\x8b"  # gzip
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_window_on_an_image_scaled_0_to_1_takes_a_typed_level_on_enter(tmp_path, capfd):
    """MR scaled 0-1: the sliders take the image's own range, a level typed and confirmed
    with Enter redraws the picture, a level past the range is clamped to it, and no error
    toast or server traceback appears."""
    from testkit import ellipsoid_volume, write_nifti

    from apps.viewer import ModelHub, build_app

    image, _ = ellipsoid_volume(SHAPE, center=(20, 20, 6), radii=(10, 9, 4))
    image = (image - image.min()) / (image.max() - image.min())
    scan = write_nifti(tmp_path / "unit.nii.gz", image.astype(np.float32))
    with (
        serve(lambda: build_app(hub=ModelHub(device="cpu")), temp_dir=tmp_path / "g") as url,
        sync_api.sync_playwright() as pw,
    ):
        browser, page = open_page(pw, url)
        page.locator("#open-image input[type=file]").set_input_files(str(scan))
        page.get_by_text("opened unit").wait_for()
        wait_for_picture(page, "#plane-axial")
        width_range = page.locator("#width input[type=range]")
        assert float(width_range.get_attribute("max")) <= 2.5  # the image's range, not HU
        assert float(width_range.get_attribute("min")) < 0.01
        before = page.locator("#plane-axial img").screenshot()
        level = page.locator("#level input[type=number]")
        level.fill("0.9")
        level.press("Enter")
        page.locator("#info").get_by_text("/0.9 ·").first.wait_for()
        wait_for_picture(page, "#plane-axial")
        page.wait_for_timeout(500)
        after = page.locator("#plane-axial img").screenshot()
        assert after != before
        level.fill("5")  # outside the image's range: clamped to it, no validation error
        level.press("Enter")
        page.locator("#info").get_by_text("/1 ·").first.wait_for()
        assert page.locator(".toast-body").count() == 0
        assert "Error" not in page.locator("body").inner_text()
        browser.close()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
