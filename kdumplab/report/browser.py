"""Look at an HTML report the way its reader will: parsed, and rendered by headless Chromium.

Used by the report tests and the benchmark; handy by hand after changing the template or a notebook.

- :func:`inspect_html` parses a page (the standard library's HTMLParser, the same tokenising rules a browser
  uses for tags) and lists what matters for safety and self-containment: ``<script>`` elements, resources
  loaded from elsewhere, images and whether they are inline PNGs, elements with ``on*=`` handler attributes,
  and the page's text as a reader sees it (entities decoded).
- :func:`render` runs Debian's ``chromium`` headless on the file, once with ``--dump-dom`` (the DOM after
  parsing and any scripts: the authority on what became markup) and once with ``--screenshot``, with console
  logging on stderr; it returns the DOM, the console messages and the screenshot path.
- :func:`colourfulness` counts distinct saturated colours in a screenshot: a page whose plots rendered has
  several, a blank or text-only page none.

>>> page = inspect_html('<p>&lt;script&gt;x</p><img src="data:image/png;base64,AA==" onerror="x()">')
>>> page.scripts, page.inline_pngs, page.handlers, "<script>x" in page.text
(0, 1, ['img onerror'], True)
>>> shot = render("report.html", "/tmp/shot.png")                     # doctest: +SKIP
>>> shot.console, colourfulness(shot.screenshot) >= 5                   # doctest: +SKIP
([], True)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["CHROMIUM_FLAGS", "Page", "Rendered", "chromium", "colourfulness", "inspect_html", "render"]

#: Flags for a quiet, offline, throw-away headless browser (no sandbox: the tests may run as root).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--mute-audio", "--hide-scrollbars")

_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)?\]\s*(.*)")


@dataclass
class Page:
    """What :func:`inspect_html` found in a page."""

    scripts: int = 0                                   # <script> elements
    external: list[str] = field(default_factory=list)  # src/href/@import URLs that leave the file
    images: list[str] = field(default_factory=list)    # <img src> values (truncated)
    inline_pngs: int = 0                               # <img src="data:image/png;base64,...">
    handlers: list[str] = field(default_factory=list)  # "tag onerror": event-handler attributes
    iframes: int = 0                                   # <iframe>, <object>, <embed>
    text: str = ""                                     # the text a reader sees (entities decoded)


class _Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._skip = 0  # inside <style> or <script>: not reader-visible text
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attrs_d = {k.lower(): v or "" for k, v in attrs}
        if tag == "script":
            self.page.scripts += 1
        if tag in ("script", "style"):
            self._skip += 1
        if tag in ("iframe", "object", "embed"):
            self.page.iframes += 1
        for name in attrs_d:
            if name.startswith("on"):
                self.page.handlers.append(f"{tag} {name}")
        if tag == "img":
            src = attrs_d.get("src", "")
            self.page.images.append(src[:64])
            if src.startswith("data:image/png;base64,"):
                self.page.inline_pngs += 1
        for name in ("src", "href", "data", "action", "poster"):
            url = attrs_d.get(name, "")
            if re.match(r"^\s*(https?:|//|ftp:|file:)", url, re.I) and not (tag == "a" and name == "href"):
                self.page.external.append(url)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self._skip:
            if "@import" in data or re.search(r"url\(\s*['\"]?(https?:|//)", data):
                self.page.external.extend(re.findall(r"(?:@import\s+|url\()\s*['\"]?([^'\")\s]+)", data))
            return
        self._text.append(data)


def inspect_html(html_text: str) -> Page:
    """Parse ``html_text`` and report scripts, external resources, images, handlers and the visible text."""
    parser = _Inspector()
    parser.feed(html_text)
    parser.close()
    parser.page.text = "".join(parser._text)
    return parser.page


def chromium() -> str | None:
    """The Chromium executable (``$CHROMIUM`` or Debian's /usr/bin/chromium), or None."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class Rendered:
    """What Chromium made of a page."""

    dom: str                 # document.documentElement.outerHTML after load
    console: list[str]       # console messages (errors, warnings, logs) in order
    screenshot: Path | None  # PNG of the top of the page
    stderr: str              # Chromium's log, for the curious


def render(path: str | os.PathLike, screenshot: str | os.PathLike | None = None, *, width: int = 1280,
           height: int = 4000, timeout: float = 120) -> Rendered:
    """Open ``path`` in headless Chromium: its DOM, its console messages and (when asked) a screenshot.

    :raises FileNotFoundError: Chromium is not installed (``apt-get install chromium``).
    """
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    url = Path(path).resolve().as_uri()
    logs = []
    with tempfile.TemporaryDirectory(prefix="kdumplab-chromium-") as profile:
        base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                f"--window-size={width},{height}"]
        env = dict(os.environ, HOME=profile)  # keep Chromium's dot-files out of the user's home
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=timeout,
                             env=env)
        logs.append(dom.stderr)
        shot = None
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            run = subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, text=True,
                                 timeout=timeout, env=env)
            logs.append(run.stderr)
            if not shot.exists():
                raise RuntimeError(f"chromium wrote no screenshot: {run.stderr[-2000:]}")
    stderr = "\n".join(logs)
    console = [m.group(1) for line in stderr.splitlines() if (m := _CONSOLE.search(line))]
    return Rendered(dom=dom.stdout, console=console, screenshot=shot, stderr=stderr)


def colourfulness(png: str | os.PathLike, min_pixels: int = 50) -> int:
    """Distinct saturated colours in the image, each covering at least ``min_pixels`` pixels (channels
    quantised to 16 levels). Text and its anti-aliasing are grey and count for nothing; a page with rendered
    plots (bars, stacked areas, legends) has several.
    """
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)
    saturated = (rgb.max(axis=2) - rgb.min(axis=2)) >= 48
    q = rgb[saturated] >> 4
    keys = (q[:, 0] << 8) | (q[:, 1] << 4) | q[:, 2]
    _, counts = np.unique(keys, return_counts=True)
    return int((counts >= min_pixels).sum())
