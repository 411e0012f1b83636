"""What in an HTML page could run a planted script: the tests plant scripts that all name one marker."""
from __future__ import annotations

import re
from html.parser import HTMLParser

MARKER = "PWNED"  # in every script a case plants; nothing active in any page may contain it


class _ActiveContent(HTMLParser):
    """Scripts, event handlers and script URLs in a page that contain `marker`."""

    def __init__(self, marker: str):
        super().__init__(convert_charrefs=True)
        self.marker, self.found, self._in_script = marker, [], False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag in ("script", "style")
        for name, value in attrs:
            value = value or ""
            link = re.sub(r"[\x00-\x20]", "", value).lower()
            if self.marker in value and (name.startswith("on") or not link.startswith(("http:", "https:", "#"))):
                self.found.append(f"<{tag} {name}={value[:80]!r}>")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script and self.marker in data:
            self.found.append(f"<script>{data.strip()[:80]}")


def active_content(page: str, marker: str = MARKER) -> list[str]:
    parser = _ActiveContent(marker)
    parser.feed(page)
    parser.close()
    return parser.found
