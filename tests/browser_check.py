"""Open the rendered book in a real browser (headless Chromium) and check what a reader sees.

    python tests/browser_check.py _build/html

Serves the folder on 127.0.0.1, loads every page of the table of contents in
Chromium, and checks: the page renders its title, every <img> it shows resolves to a
non-empty image that the browser decoded (naturalWidth > 0), no equation is left as raw
TeX (``\\(``, ``\\[`` or a ``$`` in the text outside code, which also catches display math
that MyST did not parse: MathJax is served from the book's
own ``_static/mathjax``, so this holds offline), the quickstart figure is
there, and the introduction shows the glued accuracy as a number. Screenshots are
written to ``<html>/../screenshots/`` for a person to look at. Exit status 1 on any
failure, 2 when Chromium is missing (install Debian's ``chromium``).
"""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Pages with a number that must be shown (the glued quickstart accuracy, in the
# introduction and on its own page); every other page of the book is checked too.
NUMBERS = {
    "book/intro.html": r"test accuracy of\s*(\d{2}\.\d{2})\s*%",
    "book/quickstart.html": r"test accuracy: (\d{2}\.\d{2})\s*%",
}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]
# A tiny script Chromium runs after load: report images and whether each decoded.
PROBE = """<script>window.addEventListener('load',()=>{const r=[...document.images].map(i=>i.currentSrc+' '+i.naturalWidth);
document.title='IMAGES:'+JSON.stringify(r)+':END '+document.title;});</script>"""


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


def dump_dom(browser: str, url: str, profile: str) -> str:
    out = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    return out.stdout


def screenshot(browser: str, url: str, profile: str, target: Path) -> None:
    subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2200",
                    f"--screenshot={target}", url], capture_output=True, timeout=120)


def main(html: str) -> int:
    folder = Path(html).resolve()
    if not (folder / "index.html").exists():
        print(f"{folder}/index.html missing: run `make html` first", file=sys.stderr)
        return 1
    browser = chromium()
    pages = {"index.html": None, **{str(p.relative_to(folder)): None for p in sorted((folder / "book").glob("*.html"))}}
    pages.update(NUMBERS)
    shots = folder.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    # the probe needs the page's own images decoded: serve a copy with the probe injected
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(folder, site)
        for page in pages:
            p = site / page
            p.write_text(p.read_text().replace("</head>", PROBE + "</head>", 1))
        server, port = serve(site)
        failures, seen = [], {}
        try:
            for page, number in pages.items():
                url = f"http://127.0.0.1:{port}/{page}"
                dom = dump_dom(browser, url, str(Path(tmp) / "profile"))
                if not dom.strip():
                    failures.append(f"{page}: Chromium returned no DOM")
                    continue
                m = re.search(r"IMAGES:(.*?):END", dom)
                images = [] if m is None else re.findall(r'"([^"]*)"', m.group(1))
                broken = [i for i in images if i.endswith(" 0")]
                text = re.sub(r"<[^>]+>", " ", dom)
                prose = re.sub(r"<(pre|code|script|style|textarea)\b.*?</\1>", " ", dom, flags=re.S | re.I)
                # a $ before an environment variable's name ($PARAMSTRESS_GIT_COMMIT) is text, not TeX
                raw_math = re.findall(r"\\\(|\\\[|\$(?![A-Z][A-Z0-9_]+)", re.sub(r"<[^>]+>", " ", prose))
                seen[page] = {"images": len(images), "broken": broken, "math": dom.count("<mjx-container")}
                if raw_math:
                    failures.append(f"{page}: {len(raw_math)} equation(s) not rendered (raw {sorted(set(raw_math))} "
                                    "in the text): is MathJax served from _static/mathjax?")
                if broken:
                    failures.append(f"{page}: images not decoded: {broken}")
                if "Traceback" in text:
                    failures.append(f"{page}: shows a Python traceback")
                if number:
                    found = re.search(number, re.sub(r"\s+", " ", text))
                    seen[page]["number"] = found.group(1) if found else None
                    if not found:
                        failures.append(f"{page}: expected text /{number}/ not found")
                if page == "book/quickstart.html":
                    figures = [i for i in images if "/_images/" in i or i.startswith("data:image")]
                    if len(figures) < 2:
                        failures.append(f"{page}: expected the notebook's figures, found {images}")
                screenshot(browser, url, str(Path(tmp) / "profile"),
                           shots / page.replace("/", "_").replace(".html", ".png"))
        finally:
            server.shutdown()
    shown = {seen[p].get("number") for p in NUMBERS if p in seen}
    if len(shown) != 1:
        failures.append(f"the introduction's glued accuracy and the notebook's differ: {shown}")
    for page, info in seen.items():
        print(f"{page}: {info['images']} images decoded, broken {info['broken']}, {info['math']} equations rendered"
              + (f", number shown: {info['number']}" if "number" in info else ""))
    print(f"screenshots: {shots}")
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    print("browser check: " + ("OK" if not failures else f"{len(failures)} failure(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
