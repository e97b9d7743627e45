"""The image's HEALTHCHECK: exit 0 if the component this container runs is serving, 1 if not.

    python /opt/spoolsoap/docker/healthcheck.py [facade|supervisor|devauth|console]

Without an argument the component is found among the container's processes.
- facade: every service's WSDL answers 200 under CONTEXT_ROOT, and /healthz;
- console: its /healthz answers 200 (its /readyz and the façade's say whether
  the spool takes writes and the supervisor is alive: for a load balancer, not
  a restart);
- supervisor: the daemon's heartbeat (supervisor.json in the spool) is recent
  and names a live process;
- devauth: the auth manager's WSDL answers 200.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

TIMEOUT = 5


def running_component() -> str | None:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "supervisor.daemon" in argv or any(a.endswith("keeper.py") for a in argv):
            return "supervisor"
        if "facade" in argv and "-m" in argv:
            return "facade"
        if "console" in argv and "-m" in argv:
            return "console"
        if "devauth" in argv:
            return "devauth"
    return None


def _local(host: str) -> str:
    if host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        if r.status != 200:
            raise OSError(f"{url}: HTTP {r.status}")
        r.read()


def check_facade(cfg) -> str:
    from jobs.definitions import load_definitions

    services = sorted({d.service for d in load_definitions(cfg.definitions_dir).values()})
    for service in services:
        _get(f"http://{_local(cfg.facade_host)}:{cfg.facade_port}{cfg.context_root}/{service}?wsdl")
    _get(f"http://{_local(cfg.facade_host)}:{cfg.facade_port}/healthz")
    return f"{len(services)} service(s) answer under {cfg.context_root}"


def check_console(cfg) -> str:
    _get(f"http://{_local(getattr(cfg, 'console_host', '127.0.0.1'))}:{getattr(cfg, 'console_port', 8082)}/healthz")
    return "/healthz answers"


def check_supervisor(cfg) -> str:
    import psutil

    with open(cfg.spool_dir / "supervisor.json", encoding="utf-8") as f:
        beat = json.load(f)
    age = time.time() - os.stat(cfg.spool_dir / "supervisor.json").st_mtime
    limit = max(30.0, 3 * cfg.reconcile_seconds)
    if age > limit:
        raise OSError(f"heartbeat is {age:.0f} s old (limit {limit:.0f} s)")
    if not psutil.pid_exists(int(beat["pid"])):
        raise OSError(f"daemon pid {beat['pid']} is gone")
    return f"heartbeat {age:.0f} s ago, {beat.get('running', '?')} job(s) running"


def check_devauth(cfg) -> str:
    _get(f"http://{_local(cfg.devauth_host)}:{cfg.devauth_port}/authManager/AuthManager?wsdl")
    return "WSDL answers"


def main(argv: list[str]) -> int:
    component = argv[0] if argv else running_component()
    checks = {"facade": check_facade, "supervisor": check_supervisor, "devauth": check_devauth,
              "console": check_console}
    if component not in checks:
        print(f"healthcheck: unknown component {component!r} (facade, supervisor, devauth or console)")
        return 1
    try:
        from jobs import config

        print(f"healthcheck: {component}: {checks[component](config.load())}")
        return 0
    except Exception as e:  # any failure is 'unhealthy', with its reason in the health log
        print(f"healthcheck: {component}: unhealthy: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
