"""What a graded notebook may show: nothing that runs in the formgrader or in a feedback page.

A student's notebook can carry script in many places: `text/html`, JavaScript, SVG and widget outputs,
markdown cells and `text/markdown` outputs (raw HTML, and links such as `[x](javascript:...)` that
nbconvert renders as they are), attachments (their data goes into an `<img src=...>`), and the notebook's
widget state. `SanitizeNotebook` runs on the graded notebook right after grading, so that every view of it
is safe, and on feedback again.
"""
from __future__ import annotations

import base64
import binascii
import re
from html.parser import HTMLParser
from typing import Any

from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbconvert.preprocessors.sanitize import SanitizeHTML
from nbformat import NotebookNode
from traitlets import Any as AnyTrait, Bool, List, Set, Unicode

from .cells import CHECK_DETAILS_MIME, RESULT_MIME

# HTML that a student's output or markdown may keep: text, lists, tables (pandas), headings; no scripts,
# styles, forms, frames, images from elsewhere, or event handlers.
SAFE_TAGS = ["a", "abbr", "acronym", "b", "blockquote", "br", "caption", "code", "dd", "del", "details", "div", "dl",
             "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "samp",
             "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr",
             "tt", "u", "ul", "var"]
SAFE_ATTRIBUTES = {"a": ["href", "title"], "abbr": ["title"], "acronym": ["title"], "td": ["colspan", "rowspan"],
                   "th": ["colspan", "rowspan"], "table": ["class"], "div": ["class"], "span": ["class"]}
SAFE_ATTACHMENTS = ("image/png", "image/jpeg")
BLANK_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


class SanitizeNotebook(SanitizeHTML):
    """No script from a student's notebook runs where a graded notebook is shown (formgrader, feedback).

    nbconvert's SanitizeHTML cleans the HTML of markdown and raw cells and of outputs, and drops every
    output type it does not know to be safe (JavaScript, widgets, SVG). This also keeps the course's
    result data, drops attachments that are not plain images, what outputs say about how to show
    themselves (their metadata), and the widget state.
    """

    enabled = Bool(True).tag(config=True)  # nbconvert's SanitizeHTML is off unless enabled; nbgrader never enables it
    tags = List(Unicode(), default_value=SAFE_TAGS).tag(config=True)
    attributes = AnyTrait(default_value=SAFE_ATTRIBUTES).tag(config=True)
    safe_output_keys = Set(default_value={"text/plain", "text/latex", "application/json", "image/png", "image/jpeg",
                                          RESULT_MIME, CHECK_DETAILS_MIME}).tag(config=True)

    def preprocess(self, nb, resources):
        nb.metadata.pop("widgets", None)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type in ("markdown", "raw") and not isinstance(cell.get("source"), str):
            cell.source = ""
        if "attachments" in cell:
            cell.attachments = {name: _safe_attachment(bundle) for name, bundle in (cell.attachments or {}).items()}
        if cell.cell_type == "markdown":
            # Markdown is rendered again wherever the notebook is shown, links included (nbconvert lets
            # `[x](javascript:...)` through, and nbgrader's templates do not clean markdown cells): a cell
            # whose rendering would carry anything active is shown as its text instead.
            cell.source = safe_markdown(cell.source, cell.get("attachments"))
            return cell, resources
        super().preprocess_cell(cell, resources, index)
        return cell, resources

    def sanitize_code_outputs(self, outputs):
        for output in outputs:
            if output.get("output_type") in ("stream", "error"):
                continue  # shown as escaped text
            if "metadata" in output:
                output.metadata = NotebookNode()
            data = output.get("data")
            if not isinstance(data, dict):
                output.data = data = NotebookNode()
            for key in list(data):
                if key == "text/latex" and (not isinstance(data[key], str) or ACTIVE_TEX.search(data[key])):
                    del data[key]
                    continue
                if key in self.safe_output_keys:
                    continue
                if key == "text/markdown" and isinstance(data[key], str):
                    data[key] = safe_markdown(data[key])
                elif key in self.sanitized_output_types and isinstance(data[key], str):
                    data[key] = self.sanitize_html_tags(data[key])
                else:
                    del data[key]
        return outputs


def safe_markdown(source: str, attachments: dict | None = None) -> str:
    """`source` if its rendering is inert HTML, else the same text as a code block (shown, never run)."""
    try:
        rendered = MarkdownWithMath(renderer=IPythonRenderer(escape=False, attachments=attachments or {})).render(source)
    except Exception:  # what nbconvert cannot render here, it cannot render in feedback either
        rendered = None
    if rendered is not None and is_inert_html(rendered) and not ACTIVE_TEX.search(source):
        return source
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", source)), default=0))
    return (f"[the grader shows this cell as text: its HTML or links could run code]\n\n"
            f"{fence}text\n{source}\n{fence}")


# What rendered markdown may hold: formatting tags, attributes that only describe, links to web pages, mail
# and anchors, and inline images.
INERT_TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd",
              "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "h1", "h2", "h3",
              "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp",
              "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
              "thead", "tr", "tt", "u", "ul", "var"}
INERT_ATTRIBUTES = {"align", "alt", "class", "colspan", "height", "href", "id", "rowspan", "src", "start", "title",
                    "width"}
# MathJax typesets the math of markdown and of `text/latex` outputs wherever they are shown; these TeX
# commands make links, set HTML attributes or styles, or load code.
ACTIVE_TEX = re.compile(r"\\(href|url|unicode|class|cssId|style|require|html\w*)(?![a-zA-Z])")
INERT_LINK = re.compile(r"^(https?:|mailto:|#|data:image/(png|jpeg|gif);base64,[a-z0-9+/=]*$|[^:]*$)")


class _Inspector(HTMLParser):
    """Collects what in a page is not inert: tags, attributes and links outside the lists above."""

    def __init__(self):
        super().__init__(convert_charrefs=True)  # entities decoded, as a browser reads them
        self.active: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in INERT_TAGS:
            self.active.append(tag)
        for name, value in attrs:
            # Browsers ignore whitespace and control characters inside a URL's scheme.
            link = re.sub(r"[\x00-\x20]", "", value or "").lower()
            if name not in INERT_ATTRIBUTES or (name in ("href", "src") and not INERT_LINK.match(link)):
                self.active.append(f"{tag} {name}")

    handle_startendtag = handle_starttag

    def handle_comment(self, data):  # conditional comments and the like
        self.active.append("comment")

    def handle_decl(self, decl):
        self.active.append("declaration")

    unknown_decl = handle_pi = handle_decl


def is_inert_html(text: str) -> bool:
    inspector = _Inspector()
    inspector.feed(text)
    inspector.close()
    return not inspector.active


def _safe_attachment(bundle: Any) -> dict:
    """The plain images of an attachment (a markdown cell shows them inline as data URLs): well-formed base64 only.

    An attachment with none keeps its name, as a blank pixel: nbconvert refuses a notebook whose markdown
    names a missing attachment.
    """
    kept = {}
    if not isinstance(bundle, dict):
        bundle = {}
    for mime in SAFE_ATTACHMENTS:
        value = bundle.get(mime)
        if isinstance(value, str):
            try:
                base64.b64decode(value.replace("\n", ""), validate=True)
            except (binascii.Error, ValueError):
                continue
            kept[mime] = value
    return kept or {"image/png": BLANK_PNG}
