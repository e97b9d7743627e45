"""Build step: put /opt/spoolsoap/app on the venv's path and write pyproject.toml's console scripts.

The code is not installed into site-packages: the job definitions find their
programs beside the packages ({project}/jobs/programs/...), so it stays in APP and a
.pth file puts APP on the path. Each [project.scripts] entry becomes a small
launcher in the venv's bin/. Standard library only (no setuptools, no wheel).
"""
import sys
import sysconfig
import tomllib
from pathlib import Path

APP = Path("/opt/spoolsoap/app")
BIN = Path(sys.executable).parent

Path(sysconfig.get_path("purelib"), "spoolsoap.pth").write_text(f"{APP}\n")
with open(APP / "pyproject.toml", "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
for name, target in scripts.items():
    module, func = target.split(":")
    launcher = BIN / name
    launcher.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
    launcher.chmod(0o755)
    print(f"install_app: {launcher} -> {target}")
