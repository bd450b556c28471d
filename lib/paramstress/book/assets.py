"""A Sphinx extension for the book's HTML (``sphinx: extra_extensions`` in ``_config.yml``) that
keeps the browser's console free of errors (``tests/browser_check.py`` fails a page on any):

- every page lists each of its scripts once (:func:`unique_scripts`);
- the theme's colour mode has a default: pydata-sphinx-theme 0.17 writes
  ``localStorage.getItem("mode") || "{{ default_mode }}"`` and, with no ``default_mode`` in
  ``html_context``, logs ``Got invalid theme mode: . Resetting to auto.`` as an error on a
  reader's first visit; it is set to ``"auto"`` unless the configuration names one;
- the book has a favicon (``favicon.svg`` here, unless ``html_favicon`` is set): without one the
  browser's own request for ``/favicon.ico`` fails with a 404 on every first page load.

The repeated scripts: sphinx-thebe 0.3.1 (which Jupyter Book loads) adds its inline
configuration (``const THEBE_JS_URL = ...``) on ``env-before-read-docs``, after the HTML builder
has started, and sphinx-togglebutton its selector likewise; Sphinx 7.4 then lists each twice, once
from its registry (filename ``None``) and once from the builder (filename ``""``), so every page
declared the constant twice and the browser logged ``SyntaxError: Identifier 'THEBE_JS_URL' has
already been declared`` on every page. :func:`unique_scripts` keeps the first of each (same file
or inline body, priority and attributes), in order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["unique_scripts", "defaults", "setup"]

FAVICON = Path(__file__).with_name("favicon.svg")


def unique_scripts(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """``html-page-context`` handler: drop the repeats from ``context["script_files"]``."""
    scripts = context.get("script_files")
    if scripts:
        kept: dict[tuple[Any, ...], Any] = {}
        for js in scripts:  # an inline script's filename is None when added early, "" when added late
            key = (getattr(js, "filename", js) or "", getattr(js, "priority", 0),
                   tuple(sorted(getattr(js, "attributes", {}).items())))
            kept.setdefault(key, js)
        context["script_files"] = list(kept.values())


def defaults(app: Any, config: Any) -> None:
    """``config-inited`` handler: the colour mode's default and the favicon, where not configured."""
    config.html_context = {"default_mode": "auto", **(config.html_context or {})}
    if not config.html_favicon:
        config.html_favicon = str(FAVICON)


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", defaults)
    app.connect("html-page-context", unique_scripts, priority=900)  # after the extensions that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
