"""`python -m facade` / `spoolsoap-facade`: serve every job definition's SOAP service under granian."""
import sys

from jobs.requirements import require_clfpy


def main() -> int:
    require_clfpy("facade")
    from .server import main as serve
    return serve()


if __name__ == "__main__":
    sys.exit(main())
