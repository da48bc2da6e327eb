"""`kinema demo`: the page's functions without a browser, its HTTP endpoints, and the page itself in a headless
Chromium (skipped, with the reason, where no browser or Playwright is installed)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from kinema.cli import main
from kinema.demo import DemoApp, make_handler
from kinema.errors import SamplingError
from kinema.video import read_video, write_video


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    assert main(["train", "--config", "tganv2_tiny", "--out", str(root / "run"), "--steps", "2", "--no-progress",
                 "--set", "train.sample_every=1000", "--set", "train.num_samples=1"]) == 0
    assert main(["export", str(root / "run"), str(root / "export"), "--num-samples", "1", "--no-progress"]) == 0
    return root / "export"


@pytest.fixture(scope="module")
def vdm_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_vdm")
    assert main(["train", "--config", "vdm_tiny", "--out", str(root / "run"), "--steps", "1", "--no-progress",
                 "--set", "train.sample_every=1000", "--set", "train.num_samples=1"]) == 0
    return root / "run"


@pytest.fixture
def app(exported, tmp_path):
    app = DemoApp(exported, num=2, workdir=tmp_path / "work")
    yield app
    app.close()


def test_the_page_offers_the_options_kinema_sample_lists(app):
    page = app.page()
    assert "kinema demo: tganv2" in page and 'name="seed"' in page
    for option in ("fps_multiplier", "t_start", "t_end", "frames"):
        assert f'name="{option}"' in page, option
    assert 'name="times"' not in page, "Python-only options are not on the page"


def test_a_vdm_page_takes_an_uploaded_clip_and_a_choice(vdm_run, tmp_path):
    app = DemoApp(vdm_run, num=1, workdir=tmp_path / "work")
    page = app.page()
    assert '<input type="file" name="extend"' in page and '<select name="sampler">' in page
    clip = tmp_path / "clip.mp4"
    frames = app.model.video_shape[1]
    write_video(clip, np.full((frames, *app.model.video_shape[2:], 3), 128, np.uint8), fps=8)
    seed, options = app.parse_options({"seed": "1", "steps": "2", "sampler": "ddim", "new_frames": "2"},
                                      {"extend": ("clip.mp4", clip.read_bytes())})
    assert seed == 1 and options["steps"] == 2 and options["sampler"] == "ddim" and Path(options["extend"]).is_file()
    path, shape = app.generate(seed, options)
    assert shape[0] == 1 and shape[2] == frames + 2 and read_video(path).shape[0] == frames + 2
    app.close()


def test_the_same_seed_gives_the_same_video(app):
    a, _ = app.generate(*app.parse_options({"seed": "7"}, {}))
    b, _ = app.generate(*app.parse_options({"seed": "7"}, {}))
    c, _ = app.generate(*app.parse_options({"seed": "8"}, {}))
    assert np.array_equal(read_video(a), read_video(b)) and not np.array_equal(read_video(a), read_video(c))


@pytest.mark.parametrize("fields, message", [
    ({"seed": "x"}, "seed must be a whole number"),
    ({"seed": "-1"}, "seed must be in [0, 2**62)"),
    ({"seed": "0", "fps_multiplier": "two"}, "fps_multiplier must be a whole number, got 'two'"),
    ({"seed": "0", "t_start": "nan"}, "t_start must be a finite number"),
])
def test_bad_form_values_are_one_message_naming_the_field(app, fields, message):
    with pytest.raises(SamplingError, match=message.replace("[", r"\[").replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        app.parse_options(fields, {})


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items()) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def server(app):
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(app))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


def post(url: str, fields: dict[str, str]) -> dict:
    body, content_type = multipart(fields)
    request = urllib.request.Request(url + "generate", data=body, headers={"Content-Type": content_type})
    return json.loads(urllib.request.urlopen(request).read())


def test_the_http_endpoints_generate_and_serve_an_mp4(server, app, tmp_path):
    frames = app.model.video_shape[1]
    assert b"Generate" in urllib.request.urlopen(server).read()
    result = post(server, {"seed": "3"})
    assert result["shape"] == f"2x3x{frames}x32x32"
    (tmp_path / "v.mp4").write_bytes(urllib.request.urlopen(server + result["video"]).read())
    assert read_video(tmp_path / "v.mp4").shape[0] == frames
    with pytest.raises(urllib.error.HTTPError) as info:  # the family refuses an option: its own message, as JSON
        post(server, {"seed": "3", "frames": "12"})
    assert info.value.code == 400 and "discrete-time" in json.loads(info.value.read())["error"]
    body, content_type = multipart({"seed": "3", "frames": "zero"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(server + "generate", data=body,
                                                      headers={"Content-Type": content_type}))
    assert info.value.code == 400 and "frames must be a whole number" in json.loads(info.value.read())["error"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server + "videos/../../etc/passwd")
    assert info.value.code == 404


def _browser() -> str:
    pytest.importorskip("playwright.sync_api", reason="the browser test needs Playwright: pip install playwright")
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        pytest.skip("no Chromium installed (apt install chromium, or `playwright install chromium`)")
    return path


def test_the_page_generates_and_the_video_plays_in_a_browser(server):
    executable = _browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server)
            page.fill('input[name="seed"]', "5")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
            assert page.text_content("#status").endswith("2x3x8x32x32")
            # playing: metadata loaded, the right length, and the clock advancing
            page.wait_for_function("(() => { const v = document.getElementById('video');"
                                   " return v.readyState >= 2 && v.currentTime > 0 && !v.paused; })()", timeout=30_000)
            assert page.evaluate("document.getElementById('video').videoWidth") > 0
        finally:
            browser.close()


def test_demo_arguments_are_checked_before_loading(capsys, tmp_path):
    assert main(["demo", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err
    assert main(["demo", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
