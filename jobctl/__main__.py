"""`python -m jobctl`: the same program as the `jobctl` console script."""
import sys

from jobctl.cli import main

sys.exit(main())
