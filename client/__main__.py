"""`python -m client` / `waiter-client`: checks for clfpy (client.soap needs it), then runs client.cli."""
import sys

from jobs.requirements import require_clfpy


def main(argv: list[str] | None = None) -> int:
    require_clfpy("waiter-client")
    from .cli import main as cli
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
