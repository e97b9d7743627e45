"""A clear start-up error when clfpy is missing, naming the command that installs it.

pip cannot install clfpy as a dependency: it declares suds-jurko, which does
not build on Python 3.11 (suds and requests, from pyproject.toml, stand in
for it), so it is installed on its own with --no-deps.
"""
from __future__ import annotations

import importlib.util
import sys

CLFPY_INSTALL = "pip install --no-deps clfpy==1.3.2"


def require_clfpy(program: str) -> None:
    """Exit 2 with the install command if clfpy cannot be imported."""
    if importlib.util.find_spec("clfpy") is None:
        print(f"{program}: error: the platform's client library clfpy is not installed.\n"
              f"Install it into this environment ({sys.prefix}) with:\n"
              f"    {CLFPY_INSTALL}\n"
              "(--no-deps: clfpy declares suds-jurko, which does not build on Python 3.11; "
              "suds and requests stand in for it)", file=sys.stderr)
        sys.exit(2)
