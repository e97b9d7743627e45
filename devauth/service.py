"""The AuthManager SOAP 1.1 service (spyne), wire-compatible with the platform's.

Why: services on the platform check session tokens against the platform's
authentication manager, which is unreachable from a developer machine or CI.
This service speaks the same contract (shared/contracts/AuthManager.wsdl and
.xsd): target namespace ``http://authmanager.sintef.no/``, document/literal
wrapped operations ``getSessionToken``, ``validateSessionToken``,
``getUsername``, ``getProject``, ``getRoles`` and ``getEndpoint``, request
children qualified, the response child ``return`` unqualified, and failures
as SOAP faults carrying a ``tns:SOAPException`` detail.

spyne cannot declare per-element ``form``, so the service serialises ``return``
with an empty namespace itself and the WSDL it emits is rewritten once (see
:func:`_conform_wsdl`) to state exactly what goes over the wire, with the
contract's binding, port and part names.  Clients built from the contract and
clients built from our own ``?wsdl`` therefore see the same messages.
"""
from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

import structlog
from lxml import etree
from spyne import Application, Boolean, ServiceBase, Unicode, rpc
from spyne.model.fault import Fault
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from . import tokens as tokens_mod
from .tokens import Session, TokenStore
from .users import UsersFileError, authenticate, load_users

TNS = "http://authmanager.sintef.no/"
SERVICE_NAME = "AuthManager"
SERVICE_PATH = "/authManager/AuthManager"
BINDING_NAME = "AuthManagerPortBinding"
PORT_NAME = "AuthManagerPort"

_XS = "http://www.w3.org/2001/XMLSchema"
_WSDL = "http://schemas.xmlsoap.org/wsdl/"
_WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
MAX_REQUEST_BYTES = 64 * 1024
_PLACEHOLDER_URL = "http://devauth.invalid/authManager/AuthManager"

log = structlog.get_logger("devauth")

# Request children: optional strings, qualified (schema elementFormDefault).
_In = Unicode.customize(min_occurs=0, nillable=False)
# Response child ``return``: empty namespace = unqualified, as in the contract.
_Out = Unicode.customize(min_occurs=0, nillable=False, sub_ns="")
_OutList = Unicode.customize(min_occurs=0, max_occurs="unbounded", nillable=False, sub_ns="")
_OutBool = Boolean.customize(min_occurs=1, nillable=False, sub_ns="")
_TOKEN_ARG = {"session_token": "sessionToken"}


class SOAPException(Fault):
    """The contract's only fault; the message is in faultstring and in the detail."""

    __namespace__ = TNS
    __type_name__ = "SOAPException"
    _type_info = [("message", Unicode.customize(min_occurs=0, nillable=False, sub_ns=""))]

    def __init__(self, message: str = "", faultcode: str = "Server"):
        detail = etree.Element(f"{{{TNS}}}SOAPException", nsmap={"ns2": TNS})
        etree.SubElement(detail, "message").text = message
        super().__init__(faultcode=faultcode, faultstring=message, detail=detail)


class _QuietExpectedFaults(logging.Filter):
    """spyne logs every fault with a traceback; ours are expected and logged by Backend."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SOAPException))


def _install_log_filter() -> None:
    for name in ("spyne.application", "spyne.application.client"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietExpectedFaults) for f in logger.filters):
            logger.addFilter(_QuietExpectedFaults())


class _Soap11(Soap11):
    """Soap11 that refuses DTDs: SOAP 1.1 forbids them, and an unexpanded entity
    reference would otherwise crash lxml's schema validation with a bare HTTP 500."""

    def create_in_document(self, ctx, charset=None):
        super().create_in_document(ctx, charset)
        docinfo = ctx.in_document[0].getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None:
            raise Fault("Client.DTDNotAllowed",
                        "a SOAP message must not contain a document type declaration")


class Backend:
    """Users file + token store; one per WSGI app, handed to methods as ``ctx.udc``."""

    def __init__(self, users_file: Path, store: TokenStore):
        self.users_file = users_file
        self.store = store

    def login(self, username: str | None, password: str | None, project: str | None) -> str:
        if not username or not password or not project:
            raise SOAPException("getSessionToken: username, password and project are required",
                                faultcode="Client")
        # Read on every login so that `devauth adduser` takes effect without a restart.
        try:
            users = load_users(self.users_file)
        except UsersFileError as e:
            log.error("users_file_error", error=str(e))
            raise SOAPException("authentication manager misconfigured: users file unreadable") from None
        user = authenticate(users, username, password)
        if user is None:
            log.info("login_failed", username=username, project=project, reason="credentials")
            raise SOAPException("Invalid username or password")
        roles = user.projects.get(project)
        if roles is None:
            log.info("login_failed", username=username, project=project, reason="project")
            raise SOAPException(f"User {username!r} is not a member of project {project!r}")
        token = self.store.issue(username, project, roles)
        log.info("token_issued", username=username, project=project, ttl=self.store.ttl)
        return token

    def session(self, token: str | None, operation: str) -> Session:
        session = self.store.lookup(token)
        if session is None:
            raise SOAPException(f"{operation}: invalid or expired session token")
        return session


def _backend(ctx) -> Backend:
    return ctx.udc


class AuthManagerService(ServiceBase):
    """The operations of the contract's ``AuthManager`` port type."""

    __service_name__ = SERVICE_NAME

    @rpc(_In, _In, _In, _returns=_Out, _out_variable_name="return", _throws=SOAPException)
    def getSessionToken(ctx, username, password, project):
        return _backend(ctx).login(username, password, project)

    @rpc(_In, _returns=_OutBool, _out_variable_name="return",
         _in_variable_names=_TOKEN_ARG, _throws=SOAPException)
    def validateSessionToken(ctx, session_token):
        return _backend(ctx).store.lookup(session_token) is not None

    @rpc(_In, _returns=_Out, _out_variable_name="return",
         _in_variable_names=_TOKEN_ARG, _throws=SOAPException)
    def getUsername(ctx, session_token):
        return _backend(ctx).session(session_token, "getUsername").username

    @rpc(_In, _returns=_Out, _out_variable_name="return",
         _in_variable_names=_TOKEN_ARG, _throws=SOAPException)
    def getProject(ctx, session_token):
        return _backend(ctx).session(session_token, "getProject").project

    @rpc(_In, _returns=_OutList, _out_variable_name="return",
         _in_variable_names=_TOKEN_ARG, _throws=SOAPException)
    def getRoles(ctx, session_token):
        return list(_backend(ctx).session(session_token, "getRoles").roles)

    @rpc(_In, _In, _returns=_Out, _out_variable_name="return",
         _in_variable_names=_TOKEN_ARG, _throws=SOAPException)
    def getEndpoint(ctx, session_token, component):
        # Only the authentication manager itself is known here; others are a fault.
        _backend(ctx).session(session_token, "getEndpoint")
        if (component or "").lower() in ("authmanager", "auth", "authentication"):
            return service_url(ctx.transport.req_env)
        raise SOAPException(
            f"getEndpoint: component {component!r} is unknown to the development "
            "authentication manager (only 'authManager' is)"
        )


# --------------------------------------------------------------------------- WSDL


def _conform_wsdl(raw: bytes) -> etree._Element:
    """Rewrite spyne's WSDL to the contract's schema forms and WSDL names."""
    root = etree.fromstring(raw, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    xs, wsdl, soap = f"{{{_XS}}}", f"{{{_WSDL}}}", f"{{{_WSDL_SOAP}}}"
    schema = root.find(f"{wsdl}types/{xs}schema")
    # Contract: no elementFormDefault (= unqualified); request children form="qualified".
    schema.attrib.pop("elementFormDefault", None)
    for ctype in schema.findall(f"{xs}complexType"):
        name = ctype.get("name")
        if not (name.endswith("Response") or name == "SOAPException"):
            for el in ctype.iter(f"{xs}element"):
                el.set("form", "qualified")
    for part in root.iter(f"{wsdl}part"):
        part.set("name", "fault" if part.getparent().get("name") == "SOAPException" else "parameters")
    for op in root.iter(f"{wsdl}operation"):
        op.attrib.pop("parameterOrder", None)  # named spyne's part names
    for op in root.iter(f"{soap}operation"):
        op.set("soapAction", "")
    for binding in root.findall(f"{wsdl}binding"):
        binding.set("name", BINDING_NAME)
    for port in root.iter(f"{wsdl}port"):
        port.set("name", PORT_NAME)
        port.set("binding", f"tns:{BINDING_NAME}")
    return root


def service_url(environ: dict) -> str:
    """The URL clients used to reach the service (for the WSDL's soap:address)."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST", "")
    if not re.fullmatch(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?", host):
        host = environ.get("SERVER_NAME", "localhost")
        port = environ.get("SERVER_PORT", "")
        if ":" in host:
            host = f"[{host}]"
        if port and port != {"http": "80", "https": "443"}.get(scheme):
            host = f"{host}:{port}"
    return f"{scheme}://{host}{quote(environ.get('SCRIPT_NAME', ''))}{SERVICE_PATH}"


class AuthManagerWsgi:
    """Serves the service at SERVICE_PATH (POST: SOAP, GET ?wsdl / ?xsd=1); 404 elsewhere."""

    def __init__(self, soap_app: WsgiApplication, wsdl: etree._Element, backend: Backend):
        self.soap_app = soap_app
        self.backend = backend
        self._wsdl = wsdl
        schema = wsdl.find(f"{{{_WSDL}}}types/{{{_XS}}}schema")
        xsd = etree.Element(schema.tag, attrib=dict(schema.attrib), nsmap={"xs": _XS, "tns": TNS})
        xsd.extend(copy.deepcopy(list(schema)))
        self._xsd = etree.tostring(xsd, xml_declaration=True, encoding="UTF-8")

    def wsdl_bytes(self, environ: dict) -> bytes:
        doc = copy.deepcopy(self._wsdl)
        doc.find(f".//{{{_WSDL}}}port/{{{_WSDL_SOAP}}}address").set("location", service_url(environ))
        return etree.tostring(doc, xml_declaration=True, encoding="UTF-8")

    @staticmethod
    def _reply(start_response, status: str, body: bytes, ctype: str, head: bool = False,
               extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra]
        start_response(status, headers)
        return [] if head else [body]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        text = "text/plain; charset=utf-8"
        if path.rstrip("/") != SERVICE_PATH:
            return self._reply(start_response, "404 Not Found",
                               f"not found; the service is at {SERVICE_PATH}\n".encode(), text)
        if method == "POST":
            return self.soap_app(environ, _with_worker_header(start_response))
        if method in ("GET", "HEAD"):
            query = environ.get("QUERY_STRING", "").lower()
            head = method == "HEAD"
            xml = "text/xml; charset=utf-8"
            if query == "wsdl" or query.startswith("wsdl="):
                return self._reply(start_response, "200 OK", self.wsdl_bytes(environ), xml, head)
            if query == "xsd=1":
                return self._reply(start_response, "200 OK", self._xsd, xml, head)
            return self._reply(start_response, "400 Bad Request",
                               b"POST SOAP 1.1 requests here; the WSDL is at ?wsdl\n", text, head)
        return self._reply(start_response, "405 Method Not Allowed", b"method not allowed\n",
                           text, extra=[("Allow", "GET, HEAD, POST")])


def _with_worker_header(start_response: Callable) -> Callable:
    """Add X-Devauth-Worker (the pid) so tests can see which worker answered."""
    def wrapped(status, headers, exc_info=None):
        return start_response(status, [*headers, ("X-Devauth-Worker", str(os.getpid()))], exc_info)
    return wrapped


def make_application(backend: Backend) -> Application:
    """The spyne Application; the backend reaches the methods as ``ctx.udc``."""
    app = Application(
        [AuthManagerService],
        tns=TNS,
        name=SERVICE_NAME,
        # Schema validation of requests against the (contract-equal) schema.  The
        # parser must not resolve entities, load DTDs or use the network (these are
        # spyne's defaults, spelled out here); DTDs are refused outright (_Soap11).
        in_protocol=_Soap11(validator="lxml", resolve_entities=False, load_dtd=False,
                            no_network=True, huge_tree=False),
        out_protocol=Soap11(),
    )
    _install_log_filter()

    def _attach(ctx):
        ctx.udc = backend

    app.event_manager.add_listener("method_call", _attach)
    return app


def make_wsgi_app(
    source=None,
    *,
    token_ttl: float | None = None,
    tokens_file: str | os.PathLike | None = None,
) -> AuthManagerWsgi:
    """Build the WSGI callable serving AuthManager at ``/authManager/AuthManager``.

    ``source`` is a ``jobs.config.Config`` (its ``devauth_users_file`` is used),
    a path to the users file, or None for ``jobs.config.load()``.  ``token_ttl``
    defaults to ``DEVAUTH_TOKEN_TTL`` or 24 h; ``tokens_file`` to
    ``<users stem>.tokens.sqlite3`` beside the users file.
    """
    if source is None:
        from jobs import config as config_mod

        source = config_mod.load()
    users_file = Path(getattr(source, "devauth_users_file", source)).resolve()
    ttl = tokens_mod.ttl_from_env() if token_ttl is None else tokens_mod.parse_ttl(token_ttl, "token_ttl")
    store = TokenStore(tokens_file or tokens_mod.tokens_path_for(users_file), ttl=ttl)
    backend = Backend(users_file, store)
    soap_app = WsgiApplication(make_application(backend), max_content_length=MAX_REQUEST_BYTES)
    soap_app.doc.wsdl11.build_interface_document(_PLACEHOLDER_URL)
    wsdl = _conform_wsdl(soap_app.doc.wsdl11.get_interface_document())
    return AuthManagerWsgi(soap_app, wsdl, backend)
