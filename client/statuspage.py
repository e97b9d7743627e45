"""One status_base64 value, read: COMPLETED, UNCHANGED, or a page and what it says.

The façade's page carries its state, reason, exit code, signal and progress
as data-* attributes of one element (facade.status_page), read here with
lxml, so a change of the page's wording or look does not change what the
client understands; without data-progress its percentage is unknown. Other
pages (the original waiter's) show only a bare "NN%", which is then their
progress.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from lxml import etree
from lxml import html as lhtml

ENDED = ("failed", "aborted")
_PARSER = lhtml.HTMLParser(encoding="utf-8", remove_comments=True, no_network=True)
_NUMBER = re.compile(r"\s*(\d{1,3}(?:\.\d+)?)\s*")
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")  # a page without data-progress: its first NN%
_BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dl", "ul", "ol", "li", "table", "tr",
           "br", "hr", "section", "header", "footer", "title"}


@dataclass(frozen=True)
class Status:
    """One status_base64 value, decoded: COMPLETED, UNCHANGED or a page, and what the page says."""
    kind: str                  # "COMPLETED" | "UNCHANGED" | "PAGE"
    page: str = ""
    percent: float | None = None
    state: str | None = None   # the façade's page: queued, running, stopping, succeeded, failed, aborted
    headline: str = ""
    reason: str = ""           # why it failed, who aborted it (the page's detail line)
    facts: tuple[tuple[str, str], ...] = ()  # the page's list of facts, as shown, for --json
    exit_code: int | None = None
    signal: int | None = None
    stopped: str = ""          # how the supervisor's stop ended it: SIGTERM, or SIGKILL after the grace period

    @property
    def ended(self) -> bool:
        """The job failed or was aborted: the page is final, the next poll is a JobFailedFault."""
        return self.state in ENDED

    def summary(self) -> str:
        """One line for a terminal: the state, the reason, how it ended; or the progress."""
        if self.kind != "PAGE":
            return self.kind
        if self.ended:
            how = [f"exit code {self.exit_code}" if self.exit_code is not None else "",
                   self.stopped or (f"signal {self.signal}" if self.signal is not None else "")]
            line = f"{self.state.upper()}: {self.reason or self.headline}"
            return "; ".join([line, *(x for x in how if x and x not in line)])
        pct = "no percentage on the page" if self.percent is None else f"{self.percent:.0f}%"
        return f"in progress ({self.state}), {pct}" if self.state else f"in progress, {pct}"

    def as_json(self, show_page: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.kind if self.kind != "PAGE" else (self.state or "page").upper()}
        if self.kind == "PAGE":
            data.update(percent=self.percent, headline=self.headline, reason=self.reason, facts=dict(self.facts))
            if show_page:
                data["page"] = self.page if show_page == "html" else page_text(self.page)
        return data


def decode_status(value: str | None) -> Status:
    text = (value or "").strip()
    if text in ("COMPLETED", "UNCHANGED"):
        return Status(text)
    try:
        page = base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        page = text  # not base64: show it as it came
    doc = _parse(page)
    if doc is None:
        return Status("PAGE", page)
    card = _first(doc, "//*[@data-state]")
    data = card.attrib if card is not None else {}
    return Status("PAGE", page, _percent(doc), (data.get("data-state") or "").strip().lower() or None,
                  _class_text(doc, "headline"), " ".join(data.get("data-reason", "").split()),
                  tuple((_inline(dt), _inline(dt.getnext())) for dt in doc.iter("dt")
                        if dt.getnext() is not None and dt.getnext().tag == "dd"),
                  _integer(data.get("data-exit-code")), _integer(data.get("data-signal")),
                  data.get("data-stopped", "").strip())


def page_percent(page: str) -> float | None:
    """The progress a status page shows: its data-progress, else the first NN% of its text."""
    doc = _parse(page)
    return None if doc is None else _percent(doc)


def page_text(page: str) -> str:
    """A status page as plain text for a terminal: one line per block, "name: value" per fact."""
    doc = _parse(page)
    if doc is None:
        return page.strip()
    body = _body(doc)
    for el in body.iter(tag=etree.Element):
        if el.tag == "dt":  # "name: value" on one line
            el.tail = ": " + (el.tail or "")
        elif el.tag == "dd":
            el.tail = "\n" + (el.tail or "")
        elif el.tag in _BLOCKS:
            el.text = "\n" + (el.text or "")
            el.tail = "\n" + (el.tail or "")
    text = body.text_content().replace("\xa0", " ")
    return re.sub(r"[ \t\r\f\v]+", " ", re.sub(r"\s*\n\s*", "\n", text)).strip()


def _parse(page: str) -> etree._Element | None:
    try:
        return lhtml.document_fromstring(page.encode("utf-8", "replace"), parser=_PARSER)
    except (etree.ParserError, ValueError):  # an empty page, or nothing an HTML parser can hold
        return None


def _body(doc: etree._Element) -> etree._Element:
    """The page's body without script and style, whose text (CSS: width:100%) is not content."""
    body = doc.find("body")
    body = body if body is not None else doc
    for el in body.xpath(".//script | .//style"):
        el.drop_tree()
    return body


def _first(doc: etree._Element, path: str) -> etree._Element | None:
    found = doc.xpath(path)
    return found[0] if found else None


def _percent(doc: etree._Element) -> float | None:
    """data-progress; none on a façade's page (data-state) is an unknown percentage, whatever its text says."""
    marked = _first(doc, "//*[@data-progress]")
    if marked is not None:
        m = _NUMBER.fullmatch(marked.get("data-progress"))
    elif _first(doc, "//*[@data-state]") is None:
        m = _PERCENT.search(_body(doc).text_content())
    else:
        m = None
    return None if m is None else max(0.0, min(100.0, float(m.group(1))))


def _integer(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _inline(el: etree._Element) -> str:
    return " ".join(el.text_content().split())


def _class_text(doc: etree._Element, name: str) -> str:
    found = doc.find_class(name)
    return _inline(found[0]) if found else ""
