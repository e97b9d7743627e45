"""The benchmark's baseline: the waiter as the platform's tutorial writes it, served like ours.

A minimal spyne service in the style of the tutorial's `app/Waiter.py`
(shared/seeds/tutorial_async_waiter_semwes.md): every call builds a fresh
clfpy `AuthClient(auth_wsdl)` (which downloads and parses the authentication
manager's WSDL) and validates the token with it; getServiceStatus then reads
`<WAITER_LOG_FOLDER>/<serviceID>/status.txt` and `result.txt` directly and
renders the tutorial's progress page. startWaiter creates the folder and starts
the program with `subprocess.Popen`, detached, like the tutorial.

Deviations, each needed to run it at all and none making it slower:
* Python 3 (`b64encode` wants bytes: the page is encoded first);
* the auth WSDL URL the tutorial keeps in a class attribute set by
  startWaiter (so only the worker that served the start knows it) is also
  taken from BASELINE_AUTH_WSDL at start-up, so every worker can poll;
* the program's argv comes from BASELINE_PROGRAM (a JSON list, with
  {seconds}, {status}, {result} substituted) instead of `python wait_a_while.py`.

Served like the façade, by bench.servers (same server, workers and threads):

    python -m bench.servers --app waiter --port P --log-folder DIR   (ENV_FILE as for the façade)
    python -m bench.servers --app floor --port P

`floor_app` is the HTTP floor: a WSGI app that reads the request and answers a
fixed small SOAP envelope without parsing anything; no SOAP service on the
same server can be faster.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time

from clfpy import AuthClient, ExtraParameters
from spyne import Application, Fault, Integer, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

WAITER_LOG_FOLDER = os.environ.get("WAITER_LOG_FOLDER", "/tmp/waiter")
PROGRAM = json.loads(os.environ.get("BASELINE_PROGRAM", "[]")) or [
    sys.executable, "wait_a_while.py", "{seconds}", "{status}", "{result}"]


class TokenValidationFailedFault(Fault):
    pass


def create_html_progresspage(progress):
    return f"""<html>
<head>
<title>Waiter status</title>
</head>
<body style="margin: 20px; padding: 20px;">
<h1>Waiter status at {time.strftime("%H:%M:%S")}</h1>
<div style="border-radius: 5px; border-color: lightblueblue; border-style:dashed; width: 800px; height: 80px;padding:0; margin: 0; border-width: 3px;">
<div style="position: relative; top: -3px; left: -3px; border-radius: 5px; border-color: lightblue; border-style:solid; width: {progress * 8}px; height: 80px;padding:0; margin: 0; border-width: 3px; background-color: lightblue;">
<h1 style="margin-left: 20px;" >{progress}%</h1>
</div>
</div>
</head>
</body>
"""


class WaiterService(ServiceBase):
    auth_wsdl = os.environ.get("BASELINE_AUTH_WSDL")

    @rpc(Unicode, Unicode, Unicode, Integer, _returns=(Unicode, Unicode),
         _out_variable_names=("status_base64", "result"), _throws=[TokenValidationFailedFault])
    def startWaiter(ctx, serviceID, sessionToken, extraParameters, secondsToWait):
        ep = ExtraParameters(extraParameters)
        ctx.descriptor.service_class.auth_wsdl = ep.get_auth_WSDL_URL()
        auth = AuthClient(ep.get_auth_WSDL_URL())
        if not auth.validate_session_token(sessionToken):
            logging.error("Token validation failed")
            raise TokenValidationFailedFault(faultstring="Session-token validation failed")

        waiterdir = os.path.join(WAITER_LOG_FOLDER, serviceID)
        if not os.path.exists(waiterdir):
            os.mkdir(waiterdir)
        statusfile = os.path.join(waiterdir, "status.txt")
        resultfile = os.path.join(waiterdir, "result.txt")

        values = {"seconds": str(secondsToWait if secondsToWait is not None else 60),
                  "status": statusfile, "result": resultfile}
        command = [a.format(**values) for a in PROGRAM]
        subprocess.Popen(command)

        status = base64.b64encode(create_html_progresspage(0).encode()).decode()
        result = "UNSET"
        return (status, result)

    @rpc(Unicode, Unicode, _returns=(Unicode, Unicode), _out_variable_names=("status_base64", "result"),
         _throws=[TokenValidationFailedFault])
    def getServiceStatus(ctx, serviceID, sessionToken):
        auth = AuthClient(ctx.descriptor.service_class.auth_wsdl)
        if not auth.validate_session_token(sessionToken):
            logging.error("Token validation failed")
            raise TokenValidationFailedFault(faultstring="Session-token validation failed")

        waiterdir = os.path.join(WAITER_LOG_FOLDER, serviceID)
        statusfile = os.path.join(waiterdir, "status.txt")
        resultfile = os.path.join(waiterdir, "result.txt")

        with open(statusfile) as f:
            current_status = f.read().strip()

        if current_status == "100":
            status = "COMPLETED"
            with open(resultfile) as f:
                result = base64.b64encode(f.read().encode()).decode()
            return (status, result)

        result = "UNSET"
        status = base64.b64encode(create_html_progresspage(int(current_status)).encode()).decode()
        return (status, result)


FLOOR_ANSWER = (b"<?xml version='1.0' encoding='UTF-8'?>\n<soap11env:Envelope xmlns:soap11env="
                b"\"http://schemas.xmlsoap.org/soap/envelope/\"><soap11env:Body><ok/></soap11env:Body>"
                b"</soap11env:Envelope>")


def floor_app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(FLOOR_ANSWER)))])
    return [FLOOR_ANSWER]


def make_app():
    application = Application([WaiterService], tns="waiter.sintef.no",
                               in_protocol=Soap11(validator="lxml"), out_protocol=Soap11())
    return WsgiApplication(application)


