"""spyne's answer to an operation with its output values cut out, checked against spyne before use.

facade.fastpath answers plain requests itself, byte for byte as spyne
would: at start-up it has spyne answer each such operation once (through the
whole spyne path, the outputs given as markers), cuts the answer at the
markers, then has spyne answer again with awkward values (markup, entities,
CR, non-ASCII, quotes, empty) and compares. Any difference is an error: the
caller then leaves that operation to spyne and says why.
"""
from __future__ import annotations

from typing import Callable, Iterable

HEADERS_OK = [("Content-Type", "text/xml; charset=utf-8")]  # what spyne sends with an answer (and Content-Length)
# values sent through both paths at start-up: markup, entities, CR, non-ASCII, quotes, blanks, empty
AWKWARD = ("plain", "a & b < c > d", "line\r\nnext\ttab", "quotes \" and ' ]]> end", "ünïcødé ✓ 𝄞",
           "  spaced  ", "&amp; already", "")

SpyneAnswer = Callable[[tuple[str, ...]], tuple[str, list, bytes]]  # outputs -> spyne's (status, headers, body)


def xml_text(value: str) -> bytes:
    """Text content escaped the way lxml serialises it, in UTF-8."""
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
            .encode("utf-8"))


class Template:
    """spyne's answer with its output values cut out."""

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces
        self.slots = len(pieces) - 1

    def render(self, values: Iterable[str]) -> bytes:
        out = [self.pieces[0]]
        for value, piece in zip(values, self.pieces[1:]):
            out.append(xml_text(value))
            out.append(piece)
        return b"".join(out)


def cut(spyne_answer: SpyneAnswer, slots: int) -> Template:
    """The template of an answer with `slots` outputs; ValueError if it cannot be cut or differs from spyne's."""
    markers = tuple(f"FASTPATHSLOT{i}MARK" for i in range(slots))
    status, headers, data = spyne_answer(markers)
    if status != "200 OK" or [h for h in headers if h[0] != "Content-Length"] != HEADERS_OK:
        raise ValueError(f"spyne answers {status!r} with headers {headers!r}")
    pieces, rest = [], data
    for marker in markers:
        before, found, rest = rest.partition(marker.encode())
        if not found:
            raise ValueError(f"output slot {marker} not found in spyne's answer")
        pieces.append(before)
    template = Template(pieces + [rest])
    for i in range(len(AWKWARD)):
        values = tuple(AWKWARD[(i + k) % len(AWKWARD)] for k in range(slots))
        if template.render(values) != spyne_answer(values)[2]:
            raise ValueError(f"answer for {values!r} differs from spyne's")
    return template
