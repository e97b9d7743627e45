"""The console's /healthz, /readyz and /metrics: `make_routes`, Starlette Routes to mount in its app.

The answers come from jobs.metrics: the same health checks as the façade's.
The console's /metrics is the one that exports the spool's series (every
project's job counts, the supervisor's counters, usage by project), so the
console mounts it behind its gate (operators, a scraper's bearer token); the
façade's open /metrics shows only its own. Beside them: this process's
series and the console's spool writes the storage refused
(spoolsoap_console_spool_writes_refused_total{errno}, counted from the start
by console_spool()).

The Health is built on the first request, from the app's Console (its spool,
configuration and job types) or, in an app without one, from `config` (or
jobs.config.load()). Scanning the spool blocks, so it runs in Starlette's
thread pool.
"""
from __future__ import annotations

from typing import Awaitable, Callable, Iterable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs import config as config_mod
from jobs.definitions import load_definitions
from jobs.metrics import CountingSpool, Health, refused_writes
from jobs.spool import Spool

Gate = Callable[[Request], Awaitable[Response | None]]


def console_spool(cfg: config_mod.Config) -> CountingSpool:
    """The console's spool: the writes the storage refuses it (a submit, a command) are counted for /metrics."""
    spool = CountingSpool(cfg.spool_dir)
    spool.refused = refused_writes("console", None)  # registered on the Health's registry (console_health)
    return spool


def console_health(spool: Spool, reconcile_seconds: float, job_types: Iterable[str]) -> Health:
    """The console's answers: the spool's series for each job type, and the spool's refused writes if counted."""
    health = Health(spool, reconcile_seconds, job_types=job_types, spool_series=True)
    if isinstance(spool, CountingSpool) and spool.refused is not None:
        health.registry.register(spool.refused)
    return health


def make_routes(config: config_mod.Config | None = None, gate: Gate | None = None) -> list[Route]:
    """The three routes; `gate`, if given, may refuse /metrics (the console's: operators and a scraper's token)."""
    built: list[Health] = []

    def health(request: Request) -> Health:
        if not built:  # on the event loop: one request builds it
            console = getattr(request.app.state, "console", None)
            if console is not None:
                built.append(console_health(console.spool, console.cfg.reconcile_seconds, console.definitions))
            else:
                cfg = config or config_mod.load()
                built.append(console_health(console_spool(cfg), cfg.reconcile_seconds,
                                            load_definitions(cfg.definitions_dir)))
        return built[0]

    def endpoint(name: str):
        async def answer(request: Request) -> Response:
            if gate is not None and name == "metrics" and (refused := await gate(request)) is not None:
                return refused
            answers = health(request)
            status, content_type, body = await run_in_threadpool(getattr(answers, name))
            return Response(body, status, headers={"Cache-Control": "no-store"}, media_type=content_type)
        answer.__name__ = name
        return answer

    return [Route(f"/{name}", endpoint(name), methods=["GET"]) for name in ("healthz", "readyz", "metrics")]


routes = make_routes()
