"""The SOAP façade: a thin, stateless front that validates requests and drops job specs into the spool.

It owns no process and no job state; the supervisor daemon runs the jobs and
`jobs.spool` is the only thing both sides share. Entry points: `make_app`
(a WSGI callable) and `python -m facade` (granian). Imported lazily, so that
`python -m facade` can say what is missing (clfpy) before importing it.
"""

__all__ = ["make_app"]


def __getattr__(name: str):
    if name == "make_app":
        from .app import make_app
        return make_app
    raise AttributeError(f"module 'facade' has no attribute {name!r}")
