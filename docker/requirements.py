"""Print pyproject.toml's runtime dependencies, one per line: a requirements file.

For the image build (docker/Dockerfile) and for filling docker/wheels/ for
builds without PyPI (docker/README.md), so nobody copies the list by hand.
clfpy is not among them: it is installed on its own, with --no-deps.

    python3 docker/requirements.py [PYPROJECT]    (default: the project's pyproject.toml)
"""
import sys
import tomllib
from pathlib import Path

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "pyproject.toml"
with open(path, "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
