"""Every kind of report, opened in a real headless Chromium: no console errors, every figure loads.

Chromium is driven over its DevTools protocol (a websocket, with the ``websocket-client``
package): the page is loaded from disk, console messages, uncaught exceptions and log entries of
level error are collected, each ``<img>`` is checked to have loaded with a non-zero natural size,
and a full-page screenshot is kept in the test's tmp dir (``<kind>.png``).

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it). Without it the tests skip
locally and fail in CI (``CI=true``), where a missing browser means the report was not checked.
"""

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from dnnlab.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(what: str, ok: bool) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is missing in CI; .ci/run must install it")
        pytest.skip(f"{what} is not installed (apt-get install -y chromium; pip install websocket-client)")


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, profile: Path):
        import websocket  # an optional test dependency (the test extra): imported only here

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start (no DevToolsActivePort within 30 s)")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
                 if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def errors(self) -> list[str]:
        """Console errors/warnings-as-errors, uncaught exceptions and log entries of level error."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                  for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} ({p['entry'].get('url', '')})")
        return out

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                         awaitPromise=True)["result"]["value"]

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need("chromium", CHROMIUM is not None)
    try:
        import websocket  # noqa: F401 - only checking that the test extra is installed
        del websocket
    except ImportError:
        _need("websocket-client", False)
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


IMAGES_JS = """Promise.all(Array.from(document.images).map(img => img.decode().then(
    () => [img.naturalWidth, img.naturalHeight, img.alt], () => [0, 0, img.alt])))"""


def check_in_browser(browser: Browser, html: Path, shot: Path, min_images: int = 1) -> dict:
    """Open ``html``; assert no errors and every image loaded; keep a screenshot; return facts."""
    assert html.is_file(), html
    browser.open(html)
    images = browser.evaluate(IMAGES_JS)
    errors = browser.errors()
    assert not errors, errors
    assert len(images) >= min_images, f"{html} shows {len(images)} figures, expected >= {min_images}"
    broken = [alt for w, h, alt in images if not (w > 0 and h > 0)]
    assert not broken, f"figures that did not load: {broken}"
    facts = browser.evaluate("({title: document.title, text: document.body.innerText, "
                             "height: document.documentElement.scrollHeight})")
    for width in WIDTHS:      # the page fits the window: wide tables scroll in their own box
        browser.call("Emulation.setDeviceMetricsOverride", width=width, height=900,
                     deviceScaleFactor=1, mobile=False)
        page = browser.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert page[0] <= page[1] == width, f"{html} is {page[0]} px wide in a {width} px window"
    browser.call("Emulation.clearDeviceMetricsOverride")
    png = browser.screenshot(shot)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    return facts


WIDTHS = (1280, 800)     # a laptop's window, and a narrow one


def test_a_wide_table_with_notes_fits_the_window(browser, tmp_path):
    """The CIFAR-10 report's shape (14 columns, a sentence of notes per row) in the browser:
    it fits 1280 and 800 px windows, and the notes go below the table, rows stay short."""
    from matplotlib.figure import Figure

    from dnnlab.report.html import Page  # the page builder itself, as every report uses it
    fig = Figure(figsize=(4, 3))
    fig.add_subplot().plot([0, 1], [1, 0])
    cols = [f"metric number {i}" for i in range(13)] + ["note"]
    rows = [{**{c: 0.123456 * (i + 1) for c in cols[:-1]},
             "note": "a long explanation of this row, as the verdict tables write it, " * 3}
            for i in range(6)]
    path = Page("wide").table(rows, cols).figure(fig).save(tmp_path / "wide.html")
    check_in_browser(browser, path, tmp_path / "wide.png")
    browser.open(path)
    rows_px = browser.evaluate("Array.from(document.querySelectorAll('tbody tr'))"
                               ".map(r => r.getBoundingClientRect().height)")
    assert len(rows_px) == 6 and max(rows_px) < 60
    assert browser.evaluate("document.querySelectorAll('ol.notes li').length") == 6


SYN = ('name = "syn"\n[data]\nname = "synthetic"\nlimit = 600\nvalid_size = 200\n'
       '[model]\ndepth = 2\nwidth = 16\n[train]\nepochs = 4\nprogress = false\n')


def test_browser_catches_broken_figures_and_console_errors(browser, tmp_path):
    """The check itself can fail: a missing image and a script error are both reported."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>t</title></head><body>'
                   '<img src="missing.png" alt="gone"><script>console.error("boom")</script></body></html>')
    with pytest.raises(AssertionError, match="boom|gone"):
        check_in_browser(browser, bad, tmp_path / "bad.png")


def test_train_report_in_chromium(browser, tmp_path, capsys):
    cfg = tmp_path / "syn.toml"
    cfg.write_text(SYN)
    run = tmp_path / "runs" / "syn-1"
    assert main(["train", str(cfg), "--out", str(run), "--threads", "1"]) == 0
    (tmp_path / "runs" / "syn-lr-find.png").write_bytes(b"\x89PNG")   # matched by the glob too
    assert main(["report", *map(str, sorted((tmp_path / "runs").glob("syn-*")))]) == 0
    facts = check_in_browser(browser, run / "report.html", tmp_path / "train.png")
    assert facts["title"] == "syn" and "best epoch" in facts["text"]


def test_sweep_report_in_chromium(browser, tmp_path):
    cfg = tmp_path / "syn.toml"
    cfg.write_text(SYN)
    out = tmp_path / "sweep"
    assert main(["sweep", str(cfg), "--set", "optim.lr=1e-3,3e-3", "--epochs", "2", "--out", str(out),
                 "--threads", "1"]) == 0
    facts = check_in_browser(browser, out / "report.html", tmp_path / "sweep.png")
    assert facts["title"] == "Sweep: 2 variants × 1 seed" and "vs best" in facts["text"]


def test_explain_report_in_chromium(browser, tmp_path):
    out = tmp_path / "explain"
    assert main(["explain", "init-variance", "--quick", "--out", str(out)]) == 0
    facts = check_in_browser(browser, out / "report.html", tmp_path / "explain.png")
    assert "Sources the verdicts are checked against" in facts["text"]
    assert "— source 001: a learner's notes" in facts["text"]


def test_transfer_study_report_in_chromium(browser, tmp_path):
    """The study kind in the default run: the transfer study's quick mode, one seed (~30 s)."""
    out = tmp_path / "transfer"
    assert main(["study", "transfer", "--quick", "--seeds", "1", "--out", str(out)]) == 0
    check_in_browser(browser, out / "report.html", tmp_path / "study-transfer.png", min_images=3)


@pytest.mark.slow
@pytest.mark.realdata
def test_cifar10_study_report_in_chromium(browser, tmp_path, data_dir):
    if not (data_dir / "cifar10.npz").exists():
        pytest.skip(f"CIFAR-10 not found in {data_dir}")
    out = tmp_path / "cifar10"
    assert main(["study", "cifar10", "--quick", "--seeds", "1", "--data-dir", str(data_dir),
                 "--out", str(out), "--threads", "1"]) == 0
    check_in_browser(browser, out / "report.html", tmp_path / "study-cifar10.png", min_images=3)
