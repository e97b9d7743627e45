"""The SOAP façade: a thin, stateless front that validates requests and drops job specs into the spool.

It owns no process and no job state; the supervisor daemon runs the jobs and
`jobs.spool` is the only thing both sides share. Entry points: `make_app`
(a WSGI callable) and `python -m facade` (gunicorn).
"""
from .app import make_app

__all__ = ["make_app"]
