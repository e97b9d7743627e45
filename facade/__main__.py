"""`python -m facade`: serve every job definition's SOAP service under granian."""
import sys

from .server import main

sys.exit(main())
