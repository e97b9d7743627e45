"""The façade's HTTP edge: granian's RSGI interface in front of the WSGI application.

Why not a WSGI server: a thread-per-request server gives a thread to a client
before its request is complete, so a few clients that send half a request and
wait hold every thread (gunicorn's gthread froze with 15; granian's own WSGI
interface reads the body on a blocking thread too). Here the request line and
headers are read by granian under its header timeout, which also ends idle
keep-alive connections, and the body on the worker's event loop under
FACADE_READ_TIMEOUT_SECONDS and MAX_BODY_BYTES. Only a complete request
reaches the app: a POST to a service is first run on the event loop, where
a plain poll of a warm job with a cached token is answered without a thread
(facade.inline); anything that would wait there, and every other request,
runs in one of FACADE_THREADS threads, where spyne runs as before.

A worker dies with its master (a parent-death KILL), so a façade restarted
after its master was killed binds the port at once instead of meeting
orphaned workers that still hold it. A request cut short that way was never
answered, so its client retries it; what a start wrote is durable before the
answer is sent (jobs.spool), so nothing acknowledged is lost.
"""
from __future__ import annotations

import asyncio
import ctypes
import io
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable
from urllib.parse import unquote

import structlog

from .guard import service_namespace, soap_fault
from .inline import WouldWait, on_loop
from jobs.proxies import TrustedProxies, forwarded_scheme

PR_SET_PDEATHSIG = 1

log = structlog.get_logger("facade.bridge")


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to KILL this process when its parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: orphans then end at their next restart
        return
    if os.getppid() != parent_pid:
        os._exit(0)


def _fault_response(proto, status: int, code: str, message: str, namespace: str | None) -> None:
    body = soap_fault(code, message, namespace)
    proto.response_bytes(status, [("content-type", "text/xml; charset=utf-8"), ("connection", "close")], body)


class WsgiOverRsgi:
    """An RSGI application that reads each request whole, then runs a WSGI app in a thread."""

    def __init__(self, app: Callable, max_body_bytes: int, read_timeout: float, threads: int,
                 parent_pid: int | None = None, trusted_proxies: TrustedProxies | None = None):
        self.app = app
        self.trusted_proxies = trusted_proxies or TrustedProxies(())
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.threads = threads
        self.parent_pid = parent_pid
        self.pool: ThreadPoolExecutor | None = None
        self.inline_paths = frozenset(getattr(app, "inline_paths", ()))  # the services' paths (facade.app)
        # bytes every request answerable on the loop contains (facade.app: the poll's operation name); a body
        # without them (a start, an abort) goes straight to a thread instead of failing its try on the loop
        self.inline_marker = bytes(getattr(app, "inline_marker", b""))

    # -- RSGI life cycle (called by granian in each worker) -------------------
    def __rsgi_init__(self, loop) -> None:
        if self.parent_pid is not None:
            die_with_parent(self.parent_pid)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="facade")

    def __rsgi_del__(self, loop) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":
            return
        body = await self._read_body(scope, proto)
        if body is None:
            return
        if scope.method == "POST" and self.inline_marker in body \
                and unquote(scope.path, encoding="latin-1") in self.inline_paths:
            try:
                with on_loop():
                    status, headers, data = self._call(self._environ(scope, body))
            except WouldWait:  # nothing was recorded: the thread runs the request from the start
                pass
            else:
                proto.response_bytes(status, headers, data)
                return
        environ = self._environ(scope, body)
        loop = asyncio.get_running_loop()
        status, headers, data = await loop.run_in_executor(self.pool, self._call, environ)
        proto.response_bytes(status, headers, data)

    # -- helpers -----------------------------------------------------------------
    async def _read_body(self, scope, proto) -> bytes | None:
        """The whole body, or None once a refusal has been sent (too large, too slow)."""
        limit = self.max_body_bytes
        too_big = (413, "Client.RequestTooLarge", f"request body larger than {limit} bytes (MAX_BODY_BYTES)")
        declared = (scope.headers.get("content-length") or "").strip()
        if declared.isdigit() and int(declared) > limit:
            self._refuse(scope, proto, *too_big)
            return None
        parts, size = [], 0
        try:
            async with asyncio.timeout(self.read_timeout):
                if declared.isdigit():  # the length is known and allowed: one read (hyper stops at it)
                    return await proto()
                async for chunk in proto:  # chunked: counted as it comes
                    size += len(chunk)
                    if size > limit:
                        self._refuse(scope, proto, *too_big)
                        return None
                    parts.append(chunk)
        except TimeoutError:
            log.warning("request_too_slow", path=scope.path, received=size, client=scope.client)
            self._refuse(scope, proto, 408, "Client.RequestTimeout",
                         f"the request body did not arrive within {self.read_timeout:g} s")
            return None
        return b"".join(parts)

    def _refuse(self, scope, proto, status: int, code: str, message: str) -> None:
        path = unquote(scope.path, encoding="latin-1")
        _fault_response(proto, status, code, message, service_namespace(getattr(self.app, "namespaces", {}), path))

    def _environ(self, scope, body: bytes) -> dict:
        server_host, _, server_port = scope.server.rpartition(":")
        client = scope.client.rpartition(":")[0].strip("[]")
        scheme = scope.scheme
        forwarded = scope.headers.get("x-forwarded-proto")
        if forwarded is not None and self.trusted_proxies.trusts(client):  # -Host/-Port: facade.app (the WSDL)
            scheme = forwarded_scheme(forwarded) or scheme
        environ = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(scope.path, encoding="latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server_host or scope.server,
            "SERVER_PORT": server_port or "80",
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": client,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in scope.headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ.setdefault("CONTENT_TYPE", value)
            elif key != "CONTENT_LENGTH":
                key = "HTTP_" + key
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _call(self, environ: dict) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run the WSGI app to completion in a pool thread."""
        started: list = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        try:
            result = self.app(environ, start_response)
            try:
                data = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:  # noqa: BLE001 - the app already answers its own errors; this is the last net
            log.exception("unhandled_error", path=environ.get("PATH_INFO"))
            return 500, [("content-type", "text/xml; charset=utf-8")], soap_fault(
                "Server.InternalError", "internal error in the service; the operator will find the details in its log",
                service_namespace(getattr(self.app, "namespaces", {}), environ.get("PATH_INFO") or "/"))
        status, headers = started
        return int(status.split(" ", 1)[0]), [(k.lower(), v) for k, v in headers if k.lower() != "content-length"], data
