"""The usage page (/usage) and its JSON (/api/usage): console/usage.py's view, for the logged-in user."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from jobs import usagereport

from .auth import console_of, login_required
from .usage import DAY, view


@login_required()
async def usage_page(request: Request):
    c = console_of(request)
    v = view(c, request.state.user, request.query_params)
    return c.render(request, "usage.html", **v, seconds=usagereport.seconds, size=usagereport.size)


@login_required(api=True)
async def api_usage(request: Request):
    c = console_of(request)
    v = view(c, request.state.user, request.query_params)
    if v["error"]:
        return JSONResponse({"error": v["error"]}, 400)
    return JSONResponse({"by": v["by"], "since": v["since"], "until": v["until"], "bucket_seconds": DAY,
                         "groups": [x.as_dict() for x in v["lines"]],
                         "cpu_seconds_per_day": {k: [round(x, 3) for x in s] for k, s in v["series"]}})
