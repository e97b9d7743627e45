"""`python -m facade` / `spoolsoap-facade`: serve every job definition's SOAP service under granian."""
import os
import shutil
import sys
import tempfile

from jobs.cli import service_args
from jobs.requirements import require_clfpy

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir() -> tuple[str, bool]:
    """Where the workers keep their request counts (facade.metrics), emptied; True if it is ours to remove.

    Set before anything imports prometheus_client, which picks its storage on
    import. An operator's own PROMETHEUS_MULTIPROC_DIR is emptied and kept.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
        return path, False
    path = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="spoolsoap-facade-metrics-")
    return path, True


def main(argv: list[str] | None = None) -> int:
    service_args("spoolsoap-facade", "Serve every job definition's SOAP service "
                 "(WSDL at FACADE_HOST:FACADE_PORT/CONTEXT_ROOT/<Service>?wsdl) under granian.", argv)
    require_clfpy("facade")
    path, ours = metrics_dir()
    try:
        from .server import main as serve
        return serve()
    finally:
        if ours:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
