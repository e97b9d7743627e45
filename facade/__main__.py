"""`python -m facade`: serve every job definition's SOAP service under gunicorn."""
import sys

from .server import main

sys.exit(main())
