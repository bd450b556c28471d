"""tests/browser_check.py on a tiny synthetic site: a sound page passes, and each kind of
breakage (a console error, an uncaught exception, an image that does not decode, math left as
raw TeX) fails the page it is on. Skipped where Chromium is not installed."""
import importlib.util
import shutil
from pathlib import Path

import pytest

pytest.importorskip("websocket")
if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

spec = importlib.util.spec_from_file_location("browser_check", Path(__file__).with_name("browser_check.py"))
browser_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(browser_check)

PAGE = ("<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>{title}</title></head>"
        "<body>{body}</body></html>")


def site(tmp_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    html = tmp_path / "_build" / "html"
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/good.html" />')
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(html / "book" / "figure.png")
    plt.close(fig)
    (html / "book" / "not_a_png.png").write_bytes(b"this is not an image")
    pages = {
        "good": "<h1>Fine</h1><p>Costs 5 $PARAMSTRESS_GIT_COMMIT</p><img src='figure.png'><pre>$ raw \\( in code</pre>",
        "console": "<p>text</p><script>console.error('something went wrong')</script>",
        "exception": "<p>text</p><script>undefinedFunction()</script>",
        "image": "<p>text</p><img src='not_a_png.png'>",
        "missing": "<p>text</p><img src='gone.png'>",
        "math": "<p>Inline <span class='math notranslate nohighlight'>\\(x^2\\)</span> left raw.</p>",
        "traceback": "<pre>Traceback (most recent call last):\n  File x</pre>",
    }
    for name, body in pages.items():
        (html / "book" / f"{name}.html").write_text(PAGE.format(title=name, body=body))
    return html


def test_a_sound_page_passes_and_each_breakage_fails_its_page(tmp_path):
    html = site(tmp_path)
    seen, failures = browser_check.check(html, tmp_path / "_build" / "screenshots")
    by_page = {}
    for f in failures:
        page, reason = f.split(": ", 1)
        by_page.setdefault(page, []).append(reason)
    assert "book/good.html" in seen and "book/good.html" not in by_page, by_page.get("book/good.html")
    assert "index.html" not in by_page  # a redirect to a page that exists
    assert any("console.error: something went wrong" in r for r in by_page["book/console.html"])
    assert any("uncaught exception" in r and "undefinedFunction" in r for r in by_page["book/exception.html"])
    assert any("not decoded" in r and "not_a_png.png" in r for r in by_page["book/image.html"])
    assert any("not decoded" in r for r in by_page["book/missing.html"])
    assert any("404" in r or "Failed to load" in r for r in by_page["book/missing.html"])
    assert any("no MathJax" in r for r in by_page["book/math.html"])
    assert any("not rendered" in r for r in by_page["book/math.html"])
    assert by_page["book/traceback.html"] == ["shows a Python traceback"]
    shots = sorted(p.name for p in (tmp_path / "_build" / "screenshots").glob("*.png"))
    assert shots == sorted(f"book_{n}.png" for n in ("good", "console", "exception", "image", "missing", "math",
                                                     "traceback"))
    assert all((tmp_path / "_build" / "screenshots" / s).stat().st_size > 1000 for s in shots)


def test_a_redirect_to_a_missing_page_fails(tmp_path):
    html = site(tmp_path)
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/nowhere.html" />')
    for p in (html / "book").glob("*.html"):
        if p.name != "good.html":
            p.unlink()
    _, failures = browser_check.check(html, tmp_path / "shots")
    assert failures == ["index.html: redirects to book/nowhere.html, which does not exist"]
