"""paramstress.book.assets: the Sphinx hooks that keep the book's console free of errors."""
from types import SimpleNamespace

from sphinx.builders.html._assets import _JavaScript

from paramstress.book import assets


def test_repeated_scripts_are_listed_once_in_order():
    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=thebe), _JavaScript("_static/b.js", async_="async"),
               _JavaScript("", body=thebe), _JavaScript("_static/a.js"), _JavaScript("", body="let other = 1")]
    context = {"script_files": scripts}
    assets.unique_scripts(None, "book/x", "page.html", context, None)
    assert [(j.filename, j.attributes.get("body")) for j in context["script_files"]] == [
        ("_static/a.js", None), (None, thebe), ("_static/b.js", None), ("", "let other = 1")]
    empty = {}
    assets.unique_scripts(None, "book/x", "page.html", empty, None)
    assert empty == {}


def test_defaults_fill_only_what_is_not_configured():
    config = SimpleNamespace(html_context={}, html_favicon=None)
    assets.defaults(None, config)
    assert config.html_context == {"default_mode": "auto"} and config.html_favicon.endswith("favicon.svg")
    assert assets.FAVICON.is_file()
    chosen = SimpleNamespace(html_context={"default_mode": "dark", "x": 1}, html_favicon="mine.png")
    assets.defaults(None, chosen)
    assert chosen.html_context == {"default_mode": "dark", "x": 1} and chosen.html_favicon == "mine.png"
