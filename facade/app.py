"""`make_app(config)`: the façade's WSGI callable, one SOAP service per job definition.

Each service is mounted at `<CONTEXT_ROOT>/<definition.service>` (the waiter:
`/demo-waiter/Waiter`, WSDL at `?wsdl`); `/healthz`, `/readyz` and `/metrics`
answer beside them (facade.metrics); every other path is a 404 that lists
the services. `RequestGuard` sits in front of the services.
"""
from __future__ import annotations

import logging
import re
import threading
from html import escape
from typing import Callable, Iterable

import structlog
from spyne import Application
from spyne.server.wsgi import WsgiApplication

from jobs.config import Config
from jobs.definitions import Definition, load_definitions

from .auth import Authenticator, AuthManagers
from .fastpath import OPERATION, FastPath
from .guard import RequestGuard, service_namespace, soap_fault
from .metrics import HEALTH_PATHS, CountingSpool, FacadeMetrics
from .operations import Operations
from .protocol import TypedSoap11
from jobs.proxies import TrustedProxies, forwarded_port, last_value
from .service import THROWS, DefinitionSoap11, build_service, start_operation, status_operation


log = structlog.get_logger("facade.app")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
MAX_WSDL_VARIANTS = 16


class HostAwareWsgiApplication(WsgiApplication):
    """spyne pins the WSDL's soap:address to the URL of the first WSDL request ever made.

    Behind a proxy, or after a health check on localhost, every client would
    then be sent to the wrong address; so the WSDL is built for the URL the
    client used (scheme, a well-formed Host header, path), a few variants kept.
    From a trusted proxy (FORWARDED_ALLOW_IPS) X-Forwarded-Host and
    X-Forwarded-Port name the public host and port; the server has already
    applied X-Forwarded-Proto to the scheme (facade.bridge, or gunicorn).
    """

    def __init__(self, *args, trusted_proxies: TrustedProxies | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.trusted_proxies = trusted_proxies or TrustedProxies(())
        self._variants: dict[str, bytes] = {}
        self._variants_lock = threading.Lock()
        self._built: tuple[str, bytes] | None = None

    def _wsdl_for(self, url: str) -> bytes:
        # spyne builds a document once (a second build loses the service element), so the
        # first build is the template and other URLs only change the address attribute.
        if self._built is None:
            self.doc.wsdl11.build_interface_document(url)
            self._built = (url, self.doc.wsdl11.get_interface_document())
        base_url, base = self._built
        old = f'location="{escape(base_url, quote=True)}"'.encode()
        return base.replace(old, f'location="{escape(url, quote=True)}"'.encode())

    def _public_host(self, req_env: dict, scheme: str) -> str:
        host = req_env.get("HTTP_HOST", "")
        port = None
        if self.trusted_proxies.trusts(req_env.get("REMOTE_ADDR")):
            host = last_value(req_env.get("HTTP_X_FORWARDED_HOST")) or host
            port = forwarded_port(req_env.get("HTTP_X_FORWARDED_PORT"))
        if not _HOST.fullmatch(host):
            host = f"{req_env.get('SERVER_NAME', 'localhost')}:{req_env.get('SERVER_PORT', '80')}"
        if port is not None:
            name = host[: host.rindex(":")] if re.search(r":[0-9]+$", host) else host
            host = name if port == {"http": 80, "https": 443}.get(scheme) else f"{name}:{port}"
        return host

    def handle_wsdl_request(self, req_env, start_response, url):
        scheme = req_env.get("wsgi.url_scheme", "http")
        url = f"{scheme}://{self._public_host(req_env, scheme)}{req_env.get('SCRIPT_NAME', '')}" \
              f"{req_env.get('PATH_INFO', '')}"
        with self._variants_lock:
            wsdl = self._variants.get(url)
            if wsdl is None:
                wsdl = self._wsdl_for(url)
                if len(self._variants) >= MAX_WSDL_VARIANTS:
                    self._variants.clear()
                self._variants[url] = wsdl
            self._wsdl = wsdl
            return super().handle_wsdl_request(req_env, start_response, url)


class Router:
    """Exact-path dispatch to the mounted services; anything else to `fallback`, or a 404."""

    def __init__(self, routes: dict[str, Callable], fallback: Callable | None = None,
                 namespaces: dict[str, str] | None = None):
        self.routes = routes
        self.fallback = fallback
        self.namespaces = namespaces or {}  # service path -> namespace, for a last-resort fault's <detail>

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        app = self.routes.get(path) or self.routes.get(path.rstrip("/")) or self.fallback
        if app is not None:
            return _last_resort(app, environ, start_response, service_namespace(self.namespaces, path))
        body = ("not found; services here: "
                + ", ".join(f"{p}?wsdl" for p in sorted(self.routes)) + "\n").encode()
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]


def _last_resort(app: Callable, environ: dict, start_response: Callable,
                 namespace: str | None) -> Iterable[bytes]:
    """A bug in spyne or below must still answer with a SOAP fault, and be logged once."""
    started = []

    def tracking_start_response(*args):
        started.append(True)
        return start_response(*args)
    try:
        return app(environ, tracking_start_response)
    except Exception:
        log.exception("unhandled_error", path=environ.get("PATH_INFO"))
        if started:
            raise
        body = soap_fault("Server.InternalError",
                          "internal error in the service; the operator will find the details in its log", namespace)
        start_response("500 Internal Server Error", [("Content-Type", "text/xml; charset=utf-8"),
                                                     ("Content-Length", str(len(body)))])
        return [body]


def service_paths(config: Config, definitions: dict[str, Definition]) -> list[str]:
    return [f"{config.context_root}/{d.service}" for d in definitions.values()]


def request_series(definitions: dict[str, Definition]) -> list[tuple[str, str]]:
    """Every (operation, outcome) the services can answer: the request series made at zero."""
    series = [("wsdl", "ok")]
    for d in definitions.values():
        for op, faults in THROWS.items():
            name = d.start_method if op == "start" else op
            series += [(name, "ok")] + [(name, f.fault_name) for f in faults]
    return list(dict.fromkeys(series))


def service_app(d: Definition, ops: Operations, config: Config) -> FastPath:
    """One definition's SOAP service as WSGI: spyne with the fast path (polls, starts) in front (no guard, no routing)."""
    soap_app = Application([build_service(d, ops)], tns=d.namespace,
                           in_protocol=DefinitionSoap11(d), out_protocol=TypedSoap11())
    spyne_app = HostAwareWsgiApplication(soap_app, max_content_length=config.max_body_bytes,
                                         trusted_proxies=TrustedProxies(config.forwarded_allow_ips))
    return FastPath(spyne_app, {OPERATION: status_operation(d, ops), d.start_method: start_operation(d, ops)},
                    f"{config.context_root}/{d.service}", enabled=config.facade_fast_path)


def make_app(config: Config, definitions: dict[str, Definition] | None = None) -> Callable:
    """Build the WSGI application; raises ConfigError (e.g. empty AUTH_MANAGERS) or DefinitionError."""
    allowed = AuthManagers(config.auth_managers)  # fail closed: no allow-list, no façade
    # spyne logs every fault with a traceback; the façade logs its own faults, once.
    logging.getLogger("spyne").setLevel(logging.CRITICAL)
    definitions = definitions if definitions is not None else load_definitions(config.definitions_dir)
    spool = CountingSpool(config.spool_dir).ensure()
    metrics = FacadeMetrics(spool, config.reconcile_seconds, config.auth_managers, config.auth_timeout_seconds)
    auth = Authenticator(allowed, timeout=config.auth_timeout_seconds, cache_seconds=config.auth_cache_seconds,
                         client_factory=metrics.auth.client)
    ops = Operations(spool, definitions, auth, abort_wait_seconds=config.abort_wait_seconds)
    routes: dict[str, Callable] = {}
    namespaces: dict[str, str] = {}
    for d, path in zip(definitions.values(), service_paths(config, definitions)):
        routes[path], namespaces[path] = service_app(d, ops, config), d.namespace
    # /healthz, /readyz, /metrics sit beside CONTEXT_ROOT, outside the guard and the request counts
    counted, health = metrics.instrument(RequestGuard(Router(routes, namespaces=namespaces), config.max_body_bytes,
                                                      namespaces), request_series(definitions))
    app = Router(dict.fromkeys(HEALTH_PATHS, health), fallback=counted)
    app.paths = list(routes)  # for the start-up banner
    app.namespaces = namespaces  # for facade.bridge's own faults
    app.inline_paths = frozenset(routes) if config.facade_fast_path else frozenset()  # facade.bridge, facade.inline
    app.inline_marker = OPERATION.encode()
    return app
