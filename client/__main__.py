"""`python -m client`: the same as the `waiter-client` console script."""
import sys

from .cli import main

sys.exit(main())
