"""The console's /healthz, /readyz and /metrics: `routes`, Starlette Routes to mount in its app.

The answers come from jobs.metrics: the same health checks as the façade's;
/metrics shows only this process's series (the spool's are the façade's, so
a sum over servers counts them once). The configuration is read through
jobs.config.load() on the first request, so importing this module needs
none; `make_routes(config)` builds them for a given configuration instead.
Scanning the spool blocks, so it runs in Starlette's thread pool.
"""
from __future__ import annotations

import functools
from typing import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs import config as config_mod
from jobs.metrics import Health
from jobs.spool import Spool

Gate = Callable[[Request], Awaitable[Response | None]]


def make_routes(config: config_mod.Config | None = None, gate: Gate | None = None) -> list[Route]:
    """The three routes; `gate`, if given, may refuse /metrics (the console's: operators and a scraper's token)."""
    @functools.cache
    def health() -> Health:
        cfg = config or config_mod.load()
        return Health(Spool(cfg.spool_dir), cfg.reconcile_seconds, spool_series=False)

    def endpoint(name: str):
        async def answer(request: Request) -> Response:
            if gate is not None and name == "metrics" and (refused := await gate(request)) is not None:
                return refused
            status, content_type, body = await run_in_threadpool(lambda: getattr(health(), name)())
            return Response(body, status, headers={"Cache-Control": "no-store"}, media_type=content_type)
        answer.__name__ = name
        return answer

    return [Route(f"/{name}", endpoint(name), methods=["GET"]) for name in ("healthz", "readyz", "metrics")]


routes = make_routes()
