"""The viewer served on 127.0.0.1: API calls with gradio_client, security probes
(RELIABILITY.md B.5, C.2 rows 35-38) and a bounded load test (``-m load``).

Real LiteMedSAM on CPU; one server per module. About 1 minute without the load test.
"""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from viewer_kit import SHAPE, axial_box, serve, write_scan

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword)")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return write_scan(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, scan):
    from apps.viewer import ModelHub, build_app

    temp = tmp_path_factory.mktemp("gradio")
    root = scan[0].parent

    def build():
        return build_app(hub=ModelHub(device="cpu"), root=root, delete_cache=(60, 120))

    with serve(build, temp_dir=temp, max_file_size=200_000, max_queue=16) as url:
        yield url, temp


def box_prompt(mask) -> str:
    return f"axial {SHAPE[2] // 2} box {' '.join(map(str, axial_box(mask)))}"


def stats_rows(outputs) -> list:
    """Rows of the statistics table among an event's outputs (a ``{"headers", "data"}`` dict)."""
    return next(o for o in outputs if isinstance(o, dict) and "headers" in o)["data"]


def said(outputs, text: str) -> bool:
    """Whether one of the outputs is a string containing ``text`` (the status line)."""
    return any(isinstance(o, str) and text in o for o in outputs)


# API ---------------------------------------------------------------------------------------------
def test_api_open_prompt_export(server, scan):
    url, _ = server
    client = gradio_client.Client(url, verbose=False)
    out = client.predict(gradio_client.handle_file(str(scan[0])), api_name="/open")
    assert said(out, "opened scan")
    out = client.predict(box_prompt(scan[1]), api_name="/prompt")
    rows = stats_rows(out)
    assert len(rows) == 1 and rows[0][1] == "object 1" and int(rows[0][2]) > 50
    files, message = client.predict(api_name="/export")
    names = sorted(f.rsplit("/", 1)[-1] for f in files)
    assert names == ["scan_labels.nii.gz", "scan_stats.csv", "scan_stats.json"]
    with pytest.raises(Exception, match="cannot read prompt"):
        client.predict("sideways 1 box 1 2", api_name="/prompt")
    # the server is still healthy after the error
    assert len(stats_rows(client.predict(api_name="/undo"))) == 0


def test_server_path_open_is_confined(server, scan):
    url, _ = server
    client = gradio_client.Client(url, verbose=False)
    out = client.predict("scan.nii.gz", api_name="/open_path")
    assert said(out, "opened scan")
    with pytest.raises(Exception, match="outside the allowed root"):
        client.predict("../../../../etc/passwd", api_name="/open_path")


# security probes ---------------------------------------------------------------------------------
def test_file_route_refuses_traversal_and_unreturned_files(server, scan):
    url, temp = server
    probes = [
        "/etc/passwd",
        f"{temp}/../../../../etc/passwd",
        f"{temp}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        str(scan[0]),  # under --root: opened by path, never served
        "http://127.0.0.1:1/config",
    ]
    with httpx.Client(timeout=10) as http:
        for probe in probes:
            response = http.get(f"{url}/gradio_api/file={probe}")
            assert response.status_code == 403, (probe, response.status_code)


def test_oversize_upload_is_refused_and_server_stays_healthy(server, tmp_path):
    url, _ = server
    big = tmp_path / "big.nii.gz"
    big.write_bytes(b"\0" * 300_000)
    with httpx.Client(timeout=30) as http:
        response = http.post(
            f"{url}/gradio_api/upload", files={"files": ("big.nii.gz", big.read_bytes())}
        )
        assert response.status_code == 413
        assert http.get(f"{url}/config").status_code == 200


def test_corrupt_upload_gives_one_line_error(server, tmp_path):
    url, _ = server
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08garbage" * 10)
    client = gradio_client.Client(url, verbose=False)
    with pytest.raises(Exception) as excinfo:
        client.predict(gradio_client.handle_file(str(bad)), api_name="/open")
    message = str(excinfo.value)
    assert "bad.nii.gz" in message and "Traceback" not in message and "\n" not in message


def test_auth_gives_401_without_login(tmp_path, scan):
    from apps.viewer import ModelHub, build_app

    def build():
        return build_app(hub=ModelHub(device="cpu"))

    with (
        serve(build, temp_dir=tmp_path, auth=("doctor", "s3cret")) as url,
        httpx.Client(timeout=10) as http,
    ):
        assert http.get(f"{url}/config").status_code == 401
        assert http.get(f"{url}/gradio_api/info").status_code == 401
        assert http.post(f"{url}/gradio_api/call/open", json={"data": [None]}).status_code == 401
        assert http.get(f"{url}/gradio_api/file={scan[0]}").status_code == 401
        login = http.post(f"{url}/login", data={"username": "doctor", "password": "s3cret"})
        assert login.status_code == 200
        assert http.get(f"{url}/config").status_code == 200
        wrong = httpx.post(f"{url}/login", data={"username": "doctor", "password": "nope"})
        assert wrong.status_code in (400, 401)


def test_uploads_are_deleted_from_the_private_cache(tmp_path, scan):
    """``delete_cache`` (here every 1 s, older than 1 s) removes uploads; nothing lands in the
    shared /tmp/gradio."""
    from apps.viewer import ModelHub, build_app

    def build():
        return build_app(hub=ModelHub(device="cpu"), delete_cache=(1, 1))

    with serve(build, temp_dir=tmp_path) as url:
        client = gradio_client.Client(url, verbose=False)
        client.predict(gradio_client.handle_file(str(scan[0])), api_name="/open")
        uploads = [p for p in tmp_path.rglob("scan.nii.gz")]
        assert uploads, "the upload should sit in the private GRADIO_TEMP_DIR"
        deadline = time.monotonic() + 20
        while any(p.exists() for p in uploads) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(p.exists() for p in uploads)


# load ---------------------------------------------------------------------------------------------
@pytest.mark.load
def test_six_sessions_three_prompts_each(server, scan):
    """6 concurrent sessions x 3 prompts: no errors, each sees only its own objects."""
    url, _ = server
    sessions, prompts = 6, 3

    def user(i: int) -> tuple[list, float]:
        client = gradio_client.Client(url, verbose=False)
        client.predict(gradio_client.handle_file(str(scan[0])), api_name="/open")
        mask = scan[1] if i % 2 == 0 else scan[2]
        x0, y0, x1, y1 = axial_box(mask)
        latencies, rows = [], []
        for r in range(prompts):
            started = time.perf_counter()
            text = (
                box_prompt(mask)
                if r == 0
                else f"axial {SHAPE[2] // 2} point {(x0 + x1) // 2} {(y0 + y1) // 2}"
            )
            rows = stats_rows(client.predict(text, api_name="/prompt"))
            latencies.append(time.perf_counter() - started)
        return rows, max(latencies)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        results = list(pool.map(user, range(sessions), timeout=300))
    wall = time.perf_counter() - started
    for i, (rows, _) in enumerate(results):
        assert len(rows) == 1 and rows[0][0] == 1, (i, rows)  # only its own single object
    counts = [int(rows[0][2]) for rows, _ in results]
    assert len(set(counts[0::2])) == 1 and len(set(counts[1::2])) == 1  # same input, same result
    assert counts[0] != counts[1]
    print(f"\nload: {sessions}x{prompts} prompts in {wall:.1f} s, "
          f"worst latency {max(lat for _, lat in results):.1f} s")  # fmt: skip


class SlowPredictor:
    """A stand-in for LiteMedSAM that takes 0.3 s per prompt and returns the box as the mask."""

    def fork(self):
        return SlowPredictor()

    def set_stack(self, stack):
        self.stack = stack

    def predict(self, index, box=None, points=None, point_labels=None):
        import numpy as np

        time.sleep(0.3)
        mask = np.zeros(self.stack.shape[1:], bool)
        x0, y0, x1, y1 = (int(v) for v in box)
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return mask, 1.0


@pytest.mark.load
def test_queue_overflow_is_refused_then_the_server_recovers(tmp_path, scan):
    """A burst of max_size + 12 prompts: the excess gets "Queue is full", every accepted job
    completes, and the server answers again within 5 s (RELIABILITY.md C.2 row 38)."""
    from apps.viewer import ModelHub, build_app

    max_size = 4

    def build():
        return build_app(hub=ModelHub(predictor_factory=SlowPredictor))

    with serve(build, temp_dir=tmp_path, max_queue=max_size) as url:
        client = gradio_client.Client(url, verbose=False)
        client.predict(gradio_client.handle_file(str(scan[0])), api_name="/open")
        jobs = [
            client.submit(box_prompt(scan[1]), api_name="/prompt") for _ in range(max_size + 12)
        ]
        ok, full, other = 0, 0, []
        for job in jobs:
            try:
                job.result(timeout=60)
                ok += 1
            except Exception as err:  # noqa: BLE001 - sorting outcomes
                if "Queue is full" in str(err):
                    full += 1
                else:
                    other.append(str(err))
        assert not other and ok >= 1 and full >= 1, (ok, full, other)
        started = time.perf_counter()
        client.predict(box_prompt(scan[1]), api_name="/prompt")
        assert time.perf_counter() - started < 5
