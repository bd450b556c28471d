"""Open the rendered book in a real browser (headless Chromium) and check what a reader sees.

    python tests/browser_check.py _build/html

Serves the folder on 127.0.0.1, starts one headless Chromium and drives it over the DevTools
protocol (websocket-client), loading the start page and every page of ``book/``. Each page fails
the check when:

- the browser logs an error while loading it: ``console.error``, an uncaught exception, or a
  resource that failed to load (a missing script, style sheet or image);
- an ``<img>`` does not decode (``HTMLImageElement.decode()`` rejects or ``naturalWidth`` is 0);
- math is not rendered: an element Sphinx marked as math (``.math``) holds no MathJax output
  (``mjx-container``), MathJax reports an error (``mjx-merror``), or the text outside code still
  shows raw TeX (``\\(``, ``\\[`` or a ``$``, which also catches display math that MyST did not
  parse). MathJax is served from the book's own ``_static/mathjax``, so this holds offline;
- it shows a Python traceback, or has no title (a page that only redirects, like the start
  page, must point at a page that exists);
- the glued quickstart accuracy is missing from the introduction or the quickstart page, or the
  two differ, or the quickstart page lacks its figures (checked where those pages exist).

A full-page screenshot of every page (1280 px wide) is written to ``<html>/../screenshots/``
(``_build/screenshots/``, not committed) for a person to look at. Exit status 1 on any failure,
2 when Chromium is missing (install Debian's ``chromium``).
"""
from __future__ import annotations

import base64
import functools
import http.server
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import websocket  # websocket-client: the DevTools protocol's transport

# Pages with a number that must be shown (the glued quickstart accuracy, in the
# introduction and on its own page); every other page of the book is checked too.
NUMBERS = {
    "book/intro.html": r"test accuracy of\s*(\d{2}\.\d{2})\s*%",
    "book/quickstart.html": r"test accuracy: (\d{2}\.\d{2})\s*%",
}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0",
         "--remote-allow-origins=*"]
WIDTH = 1280
MAX_SHOT_HEIGHT = 16000  # Chromium's largest texture: taller pages are shot down to here
LOAD_TIMEOUT = 60.0
MATH_TIMEOUT = 30.0

# Runs in the page once it has loaded: wait for MathJax's first typesetting where the page
# loads MathJax, make every image load (lazy ones too) and decode, then report.
INSPECT = r"""(async () => {
  const started = Date.now();
  const mathjax = !!document.querySelector('script[src*="mathjax" i]');
  if (mathjax) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() - started < %d)
      await new Promise(r => setTimeout(r, 50));
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  }
  const images = await Promise.all([...document.images].map(async img => {
    img.loading = 'eager';
    let decoded = true;
    try { await img.decode(); } catch (e) { decoded = false; }
    return {src: (img.currentSrc || img.src).slice(0, 120), width: img.naturalWidth, decoded};
  }));
  const marked = [...document.querySelectorAll('.math')];
  const prose = document.body.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, textarea, mjx-container, .MathJax').forEach(e => e.remove());
  return {
    title: document.title,
    text: document.body.innerText,
    prose: prose.textContent,
    images,
    mathjax,
    mathjax_ready: !!(window.MathJax && MathJax.startup && MathJax.startup.document),
    math_marked: marked.length,
    math_unrendered: marked.filter(e => !e.querySelector('mjx-container')).length,
    math_rendered: document.querySelectorAll('mjx-container').length,
    math_errors: document.querySelectorAll('mjx-merror').length,
    height: Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)),
  };
})()"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    print("Chromium not found: apt-get install chromium", file=sys.stderr)
    sys.exit(2)


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the report readable
            pass

        def handle(self):  # the browser may drop connections it no longer needs
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class Browser:
    """One headless Chromium and one tab, driven over the DevTools protocol: commands are sent
    and answered in order; the events that arrive meanwhile are kept for :meth:`events`."""

    def __init__(self, binary: str, profile: str):
        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},900",
                                         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url, deadline, seen = None, time.monotonic() + 60, []
        while url is None and time.monotonic() < deadline:  # Chromium prints where its DevTools listen
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            if m := re.search(r"DevTools listening on (ws://\S+)", line):
                url = m.group(1)
        if url is None:
            self.close()
            raise RuntimeError("Chromium did not start its DevTools endpoint:\n" + "".join(seen[-20:]))
        threading.Thread(target=self.process.stderr.read, daemon=True).start()  # drain, never block Chromium
        self.ws = websocket.create_connection(url, timeout=LOAD_TIMEOUT, suppress_origin=True)
        self.ids = itertools.count(1)
        self.pending: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=True)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False,
             timeout: float = LOAD_TIMEOUT) -> dict[str, Any]:
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            reply = json.loads(self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.pending.append(reply)
        raise TimeoutError(f"{method}: no answer in {timeout:.0f} s")

    def wait_for(self, event: str, timeout: float) -> bool:
        if any(e.get("method") == event for e in self.pending):
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                reply = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            self.pending.append(reply)
            if reply.get("method") == event:
                return True
        return False

    def events(self) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        return out

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - the browser goes away below either way
            pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def errors_of(events: list[dict[str, Any]]) -> list[str]:
    """The browser's errors among the DevTools events of one page load."""
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                     for a in p.get("args", []))[:300])
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("uncaught exception: " + str(d.get("exception", {}).get("description") or d.get("text"))[:300])
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()[:300])
    return list(dict.fromkeys(out))


def check_page(browser: Browser, url: str, shot: Path) -> tuple[dict[str, Any], list[str]]:
    """Loads ``url``, inspects it and writes its screenshot; returns what was seen and the failures."""
    browser.events()
    browser.send("Page.navigate", {"url": url}, session=True)
    failures = []
    if not browser.wait_for("Page.loadEventFired", LOAD_TIMEOUT):
        failures.append(f"did not finish loading in {LOAD_TIMEOUT:.0f} s")
    result = browser.send("Runtime.evaluate", {"expression": INSPECT % int(MATH_TIMEOUT * 1000), "awaitPromise": True,
                                               "returnByValue": True}, session=True, timeout=MATH_TIMEOUT + 30)
    if "exceptionDetails" in result:
        raise RuntimeError(f"{url}: the page inspection failed: {result['exceptionDetails']}")
    info = result["result"]["value"]
    time.sleep(0.2)  # errors logged while the last images decoded
    browser.wait_for("-", 0.2)
    failures += [f"browser error: {e}" for e in errors_of(browser.events())]
    broken = [f"{i['src']} (naturalWidth {i['width']})" for i in info["images"] if not i["decoded"] or i["width"] == 0]
    if broken:
        failures.append(f"{len(broken)} image(s) not decoded: {broken}")
    if not info["title"].strip():
        failures.append("no title")
    # a $ before an environment variable's name ($PARAMSTRESS_GIT_COMMIT) is text, not TeX
    raw = re.findall(r"\\\(|\\\[|\$(?![A-Z][A-Z0-9_]+)", info["prose"])
    if raw:
        failures.append(f"{len(raw)} equation(s) not rendered (raw {sorted(set(raw))} in the text): "
                        "is MathJax served from _static/mathjax?")
    if info["math_marked"] and not info["mathjax"]:
        failures.append(f"{info['math_marked']} math element(s) but no MathJax script")
    elif info["math_unrendered"]:
        failures.append(f"{info['math_unrendered']} of {info['math_marked']} math element(s) hold no MathJax output")
    if info["math_errors"]:
        failures.append(f"{info['math_errors']} MathJax error(s) (mjx-merror) in the rendered math")
    if "Traceback (most recent call last)" in info["text"]:
        failures.append("shows a Python traceback")
    # the whole page: a window as tall as the page (Chromium's captureBeyondViewport shifted the
    # layout of long pages sideways), then back to the reading size for the next page
    height = min(max(int(info["height"]), 900), MAX_SHOT_HEIGHT)
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)
    try:
        time.sleep(0.3)  # let the page lay itself out at the new height
        shot_data = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False},
                                 session=True, timeout=120)["data"]
    finally:
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=True)
    shot.write_bytes(base64.b64decode(shot_data))
    return info, failures


def check(folder: Path, shots: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Checks every page under ``folder`` (``index.html`` and ``book/*.html``); returns what each
    page showed and the failures (``page: reason``)."""
    pages = ["index.html", *(str(p.relative_to(folder)) for p in sorted((folder / "book").glob("*.html")))]
    shots.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    seen: dict[str, dict[str, Any]] = {}
    server, port = serve(folder)
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(chromium(), profile)
        try:
            for page in pages:
                start = time.monotonic()
                stub = re.search(r'<meta http-equiv="refresh" content="\d+;\s*url=([^"]+)"', (folder / page).read_text(),
                                 re.I)
                if stub:  # the start page only redirects: its target must exist (and is checked itself)
                    target = (folder / page).parent / stub.group(1)
                    if not target.is_file():
                        failures.append(f"{page}: redirects to {stub.group(1)}, which does not exist")
                    continue
                info, bad = check_page(browser, f"http://127.0.0.1:{port}/{page}",
                                       shots / page.replace("/", "_").replace(".html", ".png"))
                info["seconds"] = time.monotonic() - start
                failures += [f"{page}: {b}" for b in bad]
                seen[page] = info
                if page in NUMBERS:
                    found = re.search(NUMBERS[page], re.sub(r"\s+", " ", info["text"]))
                    info["number"] = found.group(1) if found else None
                    if not found:
                        failures.append(f"{page}: expected text /{NUMBERS[page]}/ not found")
                if page == "book/quickstart.html":
                    figures = [i for i in info["images"] if "/_images/" in i["src"] or i["src"].startswith("data:image")]
                    if len(figures) < 2:
                        failures.append(f"{page}: expected the notebook's figures, found {info['images']}")
        finally:
            browser.close()
            server.shutdown()
    shown = {seen[p].get("number") for p in NUMBERS if p in seen}
    if len(shown) > 1:
        failures.append(f"the introduction's glued accuracy and the notebook's differ: {shown}")
    return seen, failures


def main(html: str) -> int:
    folder = Path(html).resolve()
    if not (folder / "index.html").exists():
        print(f"{folder}/index.html missing: run `make html` first", file=sys.stderr)
        return 1
    start = time.monotonic()
    shots = folder.parent / "screenshots"
    seen, failures = check(folder, shots)
    for page, info in seen.items():
        print(f"{page}: {len(info['images'])} images decoded, {info['math_rendered']} equations rendered "
              f"({info['math_marked']} marked), {info['seconds']:.1f} s"
              + (f", number shown: {info['number']}" if "number" in info else ""))
    print(f"screenshots: {shots}")
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    print(f"browser check: {len(seen)} pages in {time.monotonic() - start:.0f} s: "
          + ("OK" if not failures else f"{len(failures)} failure(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
