"""A Java JAX-WS client generated from our WSDL gets the typed exceptions the WSDL declares.

Why: a fault is typed only if its <detail> carries the element the WSDL
declares for it; otherwise JAX-WS (and .NET) raise a generic SOAPFaultException
and a client written against the WSDL never sees its declared faults.
`wsimport` and the JAX-WS runtime come from Debian (`jaxws libjaxws-java`,
installed by .ci/run); outside CI the test is skipped when they are missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from facade_harness import bare_stack, devauth, new_sid  # noqa: F401

JAXWS_RT = Path("/usr/share/java/jaxws-rt.jar")

CLIENT = r"""
import java.net.URL;
import java.util.List;
import java.util.Set;
import javax.xml.namespace.QName;
import javax.xml.ws.BindingProvider;
import javax.xml.ws.Holder;
import javax.xml.ws.handler.Handler;
import javax.xml.ws.handler.MessageContext;
import javax.xml.ws.handler.soap.SOAPHandler;
import javax.xml.ws.handler.soap.SOAPMessageContext;
import waiter.*;

public class Typed {
    /** Rewrites secondsToWait to "abc" on the way out: a request the schema refuses. */
    static class NotAnInteger implements SOAPHandler<SOAPMessageContext> {
        public boolean handleMessage(SOAPMessageContext c) {
            if ((Boolean) c.get(MessageContext.MESSAGE_OUTBOUND_PROPERTY)) {
                try {
                    c.getMessage().getSOAPBody().getElementsByTagNameNS("*", "secondsToWait").item(0).setTextContent("abc");
                } catch (javax.xml.soap.SOAPException e) {
                    throw new RuntimeException(e);
                }
            }
            return true;
        }
        public boolean handleFault(SOAPMessageContext c) { return true; }
        public void close(MessageContext c) {}
        public Set<QName> getHeaders() { return null; }
    }

    public static void main(String[] args) throws Exception {
        Application port = new WaiterService(new URL(args[0])).getApplication();
        Holder<String> page = new Holder<>(), result = new Holder<>();
        try {
            port.startWaiter(args[1], "not-a-token", args[2], java.math.BigInteger.ONE, page, result);
            System.out.println("NO FAULT");
        } catch (TokenValidationFailedFault_Exception e) {
            System.out.println("TYPED start: " + e.getMessage() + " | reason: " + e.getFaultInfo().getReason().getValue());
        }
        try {
            port.getServiceStatus(args[1], args[3], page, result);
            System.out.println("NO FAULT");
        } catch (UnknownServiceIDFault_Exception e) {
            System.out.println("TYPED status: " + e.getMessage());
        }
        Application schema = new WaiterService(new URL(args[0])).getApplication();
        List<Handler> chain = ((BindingProvider) schema).getBinding().getHandlerChain();
        chain.add(new NotAnInteger());
        ((BindingProvider) schema).getBinding().setHandlerChain(chain);
        try {
            schema.startWaiter(args[1], args[3], args[2], java.math.BigInteger.ONE, page, result);
            System.out.println("NO FAULT");
        } catch (InvalidRequestFault_Exception e) {
            System.out.println("TYPED schema: " + e.getMessage());
        }
    }
}
"""


def _tools_or_skip() -> str:
    wsimport = shutil.which("wsimport")
    if wsimport and shutil.which("javac") and JAXWS_RT.exists():
        return wsimport
    if os.environ.get("CI"):
        pytest.fail("wsimport, javac or the JAX-WS runtime is missing (.ci/run installs jaxws libjaxws-java)")
    pytest.skip("needs wsimport, javac and the JAX-WS runtime (apt-get install jaxws libjaxws-java default-jdk-headless)")


def test_jaxws_client_gets_the_declared_fault_types(bare_stack, devauth, tmp_path):  # noqa: F811
    """startWaiter with a bad token raises TokenValidationFailedFault_Exception (with its reason);
    getServiceStatus of an unknown serviceID raises UnknownServiceIDFault_Exception; a start the schema
    refuses (secondsToWait rewritten to "abc" by a handler) raises InvalidRequestFault_Exception."""
    wsimport = _tools_or_skip()
    generated = tmp_path / "generated"
    generated.mkdir()
    subprocess.run([wsimport, "-quiet", "-d", str(generated), "-p", "waiter", bare_stack.wsdl],
                   check=True, capture_output=True, text=True, timeout=120)
    (tmp_path / "Typed.java").write_text(CLIENT)
    classpath = f"{generated}:{JAXWS_RT}:{tmp_path}"
    subprocess.run(["javac", "-cp", classpath, "-d", str(tmp_path), str(tmp_path / "Typed.java")],
                   check=True, capture_output=True, text=True, timeout=120)
    done = subprocess.run(["java", "-cp", classpath, "Typed", bare_stack.wsdl, new_sid("java"),
                           bare_stack.extra(), devauth.token()],
                          capture_output=True, text=True, timeout=120)
    assert 0 == done.returncode, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "TYPED start: Session-token validation failed | reason: the token is unknown or expired" == lines[0]
    assert lines[1].startswith("TYPED status: no Waiter job with serviceID 'java-"), lines
    assert lines[2].startswith("TYPED schema: invalid request: element 'secondsToWait'"), lines
