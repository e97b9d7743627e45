"""What a finished job returns: its output files read by the definition's rules, safe for XML.

The façade answers COMPLETED with these and the console shows them on the job
page; both read them here, so the rules are written once.
"""
from __future__ import annotations

import re

from .definitions import Definition
from .runfiles import RunFiles
from .runstate import RunState
from .spool import NotRegularFile, open_regular

# XML 1.0 cannot carry these; a program's output must not break the SOAP response.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def read_output(path: str, max_bytes: int, placeholder: str) -> str:
    """An output file's text: at most max_bytes, one trailing newline stripped."""
    try:
        with open_regular(path) as f:
            data = f.read(max_bytes)
    except (FileNotFoundError, NotRegularFile):
        return placeholder
    text = data.decode("utf-8", "replace")
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return xml_safe(text)


def outputs(files: RunFiles, definition: Definition, run: RunState) -> tuple[str, ...]:
    paths = files.attempt(run.attempt).outputs(definition)
    return tuple(read_output(path, o.max_bytes, o.placeholder) for path, o in zip(paths, definition.outputs))
