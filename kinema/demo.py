"""``kinema demo RUN_OR_EXPORT``: a local web page to sample a trained model -- pick the seed and the family's
sampling options, press Generate, watch the video.

The page offers exactly the options ``kinema sample --help`` lists for the model's family (its sampler's
:class:`~kinema.sampling.SampleOption` s with a command-line flag): numbers and choices as fields, a video or
mask input as a file upload (a clip to continue for frame-conditional models), a caption as text. Generation
runs the same :func:`kinema.api.generate` as ``kinema sample``; the result is an H.264 MP4 that the page's
``<video>`` element plays.

Written on the standard library's ``http.server`` rather than Gradio: the page is one form and one endpoint,
Gradio would add ~60 packages and its own pins on every install, and this way nothing but kinema is needed to
run or to test it. It binds to 127.0.0.1 by default: a model is served to this machine only unless ``--host``
says otherwise.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import tempfile
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kinema.errors import CheckpointError, SamplingError
from kinema.sampling import SampleOption

# Options whose value is a file the user uploads (by metavar: `kinema sample` reads them as paths).
FILE_METAVARS = ("VIDEO", "MASKS")
MAX_UPLOAD = 256 * 2**20  # bytes; a clip to continue is small, this only stops a runaway request


class DemoApp:
    """The model behind the page: loads it once, renders the form, generates on request.

    ``path``: an export, run or checkpoint folder (or a Hub id, through :func:`kinema.api.from_pretrained`).
    Videos are written under ``workdir`` (a temporary folder by default, removed by :meth:`close`)."""

    def __init__(self, path: str | Path, device: str = "cpu", num: int = 4, workdir: str | Path | None = None) -> None:
        from kinema.api import from_pretrained
        from kinema.registry import sampler_for

        from kinema.api import _check_sample_memory

        self.model, self.config = from_pretrained(path, device=device)
        self.sampler = sampler_for(self.model)
        _check_sample_memory(self.model, self.sampler, num, {})  # --num past memory would kill the server mid-request
        self.options: list[SampleOption] = [o for o in self.sampler.options if o.cli]
        self.num, self.source = num, str(path)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="kinema-demo-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one generation at a time: a model is not re-entrant on every device

    def close(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ the page

    def _field(self, option: SampleOption) -> str:
        name, label = html.escape(option.name), html.escape(option.name.replace("_", " "))
        tip = html.escape(option.help)
        if option.metavar in FILE_METAVARS:
            control = f'<input type="file" name="{name}" accept="video/*,image/gif">'
        elif option.choices:
            items = "".join(f'<option value="{html.escape(str(c))}">{html.escape(str(c))}</option>' for c in option.choices)
            control = f'<select name="{name}"><option value="">(default)</option>{items}</select>'
        elif option.type in (int, float):
            step = "1" if option.type is int else "any"
            control = f'<input type="number" step="{step}" name="{name}" placeholder="default">'
        else:
            control = f'<input type="text" name="{name}" placeholder="default">'
        return f'<label title="{tip}">{label} {control}</label><div class="help">{tip}</div>'

    def page(self) -> str:
        """The HTML page: the seed, one field per sampling option, Generate, and the video."""
        fields = "\n".join(self._field(o) for o in self.options)
        title = f"kinema demo: {self.config.model.name}"
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:52em;margin:2em auto}} label{{display:block;margin-top:.8em}}
.help{{color:#666;font-size:.85em}} video{{margin-top:1em;image-rendering:pixelated;width:32em;background:#000}}
#status{{margin-top:1em}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{html.escape(self.source)} &middot; {self.num} videos per press, in a grid &middot; the same seed and options
give the same videos as <code>kinema sample --seed</code>.</p>
<form id="form">
<label>seed <input type="number" name="seed" value="0" min="0" step="1" required></label>
{fields}
<p><button type="submit" id="generate">Generate</button></p></form>
<div id="status"></div>
<video id="video" controls autoplay muted loop playsinline></video>
<script>
const form = document.getElementById("form"), status = document.getElementById("status");
form.addEventListener("submit", async (event) => {{
  event.preventDefault();
  status.textContent = "generating ...";
  const started = performance.now();
  const reply = await fetch("generate", {{method: "POST", body: new FormData(form)}});
  const result = await reply.json();
  if (!reply.ok) {{ status.textContent = "error: " + result.error; return; }}
  const video = document.getElementById("video");
  video.src = result.video;
  video.play().catch(() => {{}});
  status.textContent = `done in ${{((performance.now() - started) / 1000).toFixed(1)}} s: ${{result.shape}}`;
}});
</script></body></html>"""

    # ------------------------------------------------------------------ generation

    def parse_options(self, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[int, dict]:
        """``(seed, options)`` from the form: empty fields keep the family's default; numbers are converted and
        checked here so a bad value is one message naming the field. Uploaded files are saved under
        ``workdir`` and passed as paths, as ``kinema sample`` passes them."""
        try:
            seed = int(fields.get("seed", "0") or 0)
        except ValueError:
            raise SamplingError(f"seed must be a whole number, got {fields.get('seed')!r}") from None
        if not 0 <= seed < 2**62:
            raise SamplingError(f"seed must be in [0, 2**62), got {seed}")
        options = {}
        for option in self.options:
            if option.metavar in FILE_METAVARS:
                if option.name in files and files[option.name][1]:
                    name, data = files[option.name]
                    suffix = Path(name).suffix.lower() or ".mp4"
                    path = self.workdir / f"upload-{uuid.uuid4().hex[:8]}{suffix}"
                    path.write_bytes(data)
                    options[option.name] = str(path)
                continue
            text = fields.get(option.name, "").strip()
            if not text:
                continue
            try:
                value = option.type(text) if option.type in (int, float) else text
            except ValueError:
                raise SamplingError(f"{option.name} must be {'a whole number' if option.type is int else 'a number'}, "
                                    f"got {text!r}") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise SamplingError(f"{option.name} must be a finite number, got {text!r}")
            if option.choices and value not in option.choices:
                raise SamplingError(f"{option.name} must be one of {', '.join(map(str, option.choices))}, got {text!r}")
            options[option.name] = value
        return seed, options

    def generate(self, seed: int, options: dict) -> tuple[Path, tuple[int, ...]]:
        """Sample ``num`` videos with ``seed`` and ``options``; returns the grid MP4 and the batch shape
        ``(N, C, T, H, W)``."""
        from kinema.api import generate
        from kinema.video import save_video_grid

        with self._lock:
            videos = generate(self.model, self.num, seed=seed, **options)
        fps = self.config.train.fps * self.sampler.frame_rate_scale(self.model, **options)
        path = self.workdir / f"video-{uuid.uuid4().hex[:12]}.mp4"
        save_video_grid(videos, path, fps=fps, nrow=math.ceil(math.sqrt(self.num)))
        return path, tuple(videos.shape)


def _parse_form(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """multipart/form-data -> (text fields, files as (filename, bytes)); the email parser reads the MIME parts."""
    message = BytesParser(policy=email_policy).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body)
    fields, files = {}, {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        filename = part.get_filename()
        data = part.get_payload(decode=True) or b""
        if filename is not None:
            files[name] = (filename, data)
        else:
            fields[name] = data.decode("utf-8", errors="replace")
    return fields, files


def make_handler(app: DemoApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # one line per generation instead, from serve()
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                return self._send(200, app.page().encode(), "text/html; charset=utf-8")
            name = Path(self.path).name
            file = app.workdir / name
            if self.path.startswith("/videos/") and name.startswith("video-") and file.is_file():
                return self._send(200, file.read_bytes(), "video/mp4")
            self._json(404, {"error": f"no such page: {self.path}"})

        def do_POST(self):
            if self.path != "/generate":
                return self._json(404, {"error": f"no such endpoint: {self.path}"})
            try:  # a client's header: not a number, or negative (read(-1) would wait for the client to hang up)
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                return self._json(400, {"error": "Content-Length must be a whole number of bytes >= 0"})
            if length > MAX_UPLOAD:
                return self._json(413, {"error": f"request of {length:,} bytes; uploads are limited to {MAX_UPLOAD:,}"})
            try:
                fields, files = _parse_form(self.headers.get("Content-Type", ""), self.rfile.read(length))
                seed, options = app.parse_options(fields, files)
                started = time.perf_counter()
                path, shape = app.generate(seed, options)
            except (SamplingError, CheckpointError, ValueError, OSError) as exc:
                return self._json(400, {"error": str(exc)})
            print(f"kinema demo: seed {seed} {options or ''} -> {shape} in {time.perf_counter() - started:.1f} s",
                  flush=True)
            self._json(200, {"video": f"videos/{path.name}", "shape": "x".join(map(str, shape))})

    return Handler


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", num: int = 4) -> None:
    """Serve the demo page of ``path`` until interrupted (Ctrl-C)."""
    app = DemoApp(path, device=device, num=num)
    try:
        server = ThreadingHTTPServer((host, port), make_handler(app))
    except OSError as exc:  # a port in use, a host name that does not resolve, an address not of this machine
        app.close()
        raise OSError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port (0: any free one) "
                      "or --host") from None
    print(f"kinema demo: {app.config.model.name} from {path} at http://{host}:{server.server_port}/ (Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
