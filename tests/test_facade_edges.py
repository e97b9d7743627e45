"""The façade's edges as they happen in life: its processes killed mid-burst, slow and idle clients.

Real processes throughout: devauth, supervisor, the façade under granian on a
free loopback port; clients speak raw HTTP (sockets) or SOAP over requests.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from xml.sax.saxutils import escape

import psutil
import pytest
import requests

from facade_harness import bare_stack, devauth, make_stack, new_sid, soap_envelope, start_facade  # noqa: F401
from harness import ROOT, wait_for

START = ("<w:startWaiter><w:serviceID>{sid}</w:serviceID><w:sessionToken>{token}</w:sessionToken>"
         "<w:extraParameters>{extra}</w:extraParameters><w:secondsToWait>0</w:secondsToWait></w:startWaiter>")
POLL = ("<w:getServiceStatus><w:serviceID>{sid}</w:serviceID><w:sessionToken>{token}</w:sessionToken>"
        "</w:getServiceStatus>")


def _post(stack, body: str, timeout: float = 10, session=requests) -> requests.Response:
    return session.post(stack.base_url, data=soap_envelope(body).encode(), timeout=timeout,
                        headers={"Content-Type": "text/xml; charset=utf-8"})


def _workers(master_pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(master_pid).children()
    except psutil.NoSuchProcess:
        return []


def test_staged_file_that_a_stray_descriptor_wrote_into_is_never_published(tmp_path):
    """A thread writing NULs through a closed descriptor number (gunicorn's exit bug) never corrupts a published file."""
    script = r"""
import os, sys, threading
from pathlib import Path
from jobs.spool import Spool
spool = Spool(Path(sys.argv[1])).ensure()
w = os.open(os.devnull, os.O_RDONLY); os.close(w)  # the next number open() gives; a careless thread writes to it
stop = False
def stray():
    while not stop:
        try:
            os.write(w, b"\0")
        except OSError:
            pass
t = threading.Thread(target=stray); t.start()
published = refused = 0
for i in range(3000):
    data = b'{"n": %d}\n' % i
    try:
        spool.write_atomic(spool.incoming / f"{i}.json", data)
        published += 1
    except OSError:
        refused += 1
stop = True; t.join()
bad = [p.name for p in spool.incoming.iterdir() if p.read_bytes() != b'{"n": %d}\n' % int(p.stem)]
print(published, refused, len(bad))
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "spool")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    published, refused, bad = map(int, out)
    assert 0 == bad, f"{bad} published files differ from what was written"
    assert published + refused == 3000
    assert [] == os.listdir(tmp_path / "spool" / "tmp")


def test_every_acknowledged_start_survives_kill_storms_of_workers_and_master(tmp_path, devauth):  # noqa: F811
    """Starts answered with success during kill -9 of façade workers and masters all run; a new façade binds at once."""
    stack = make_stack(tmp_path / "s", devauth, MAX_PARALLEL_JOBS="50")
    token = devauth.token()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    rebinds: list[float] = []

    def client():
        session = requests.Session()  # keep-alive, like a workflow manager's HTTP client
        while not stop.is_set():
            sid = new_sid("storm")
            try:
                r = _post(stack, START.format(sid=sid, token=token, extra=escape(stack.extra())), timeout=5,
                          session=session)
                _post(stack, POLL.format(sid=sid, token=token), timeout=5, session=session)
            except requests.RequestException:
                session = requests.Session()
                continue  # no answer: not acknowledged (a WFM would retry with the same serviceID)
            if r.status_code == 200 and b"status_base64" in r.content:
                with lock:
                    acknowledged.append(sid)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    facades = [stack.facade]
    try:
        for round_ in range(4):
            time.sleep(1.0)
            master = facades[-1]
            workers = _workers(master.pid)
            assert workers, "the façade has no workers"
            os.kill(workers[0].pid, signal.SIGKILL)
            time.sleep(0.3)
            os.kill(master.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            master.proc.wait(5)
            # every worker of the dead master goes, and a new façade binds the same port at once
            wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
                     5, what="the dead master's workers to exit")
            facades.append(start_facade(stack.env_file, tmp_path / f"facade-{round_}.log"))
            rebinds.append(time.monotonic() - killed_at)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        stack.extras.extend(facades[1:])
    try:
        assert len(acknowledged) > 50, f"only {len(acknowledged)} starts were acknowledged"
        assert max(rebinds) < 8, f"a new façade took {max(rebinds):.1f} s to serve after the master died"
        spool = stack.spool

        def settled():
            return all((spool / "runs" / sid / "state.json").exists() for sid in acknowledged)
        wait_for(settled, 60, 0.2, what="every acknowledged start to have a run")
        lost = [sid for sid in acknowledged if not (spool / "runs" / sid).is_dir()]
        assert [] == lost
        assert [] == sorted(os.listdir(spool / "rejected"))
        for sid in acknowledged:
            assert json.loads((spool / "runs" / sid / "spec.json").read_bytes())["service_id"] == sid
    finally:
        stack.stop()


def _held(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    return s


def test_slow_and_idle_clients_do_not_starve_polls_and_are_timed_out(tmp_path, devauth):  # noqa: F811
    """Hundreds of half-sent requests and idle connections: polls keep being answered; the slow ones are closed."""
    stack = make_stack(tmp_path / "s", devauth, FACADE_READ_TIMEOUT_SECONDS="3")
    port = stack.config.facade_port
    path = f"{stack.config.context_root}/Waiter"
    token = devauth.token()
    sid = new_sid("slow")
    assert 200 == _post(stack, START.format(sid=sid, token=token, extra=escape(stack.extra()))).status_code
    half_headers = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Ty".encode()
    half_body = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 5000\r\n\r\n"
                 "<soapenv:Envelope").encode()
    held = []
    try:
        for i in range(500):
            held.append(_held(port, (half_headers, half_body, b"")[i % 3]))
        time.sleep(0.5)
        worst = 0.0
        for _ in range(20):
            t0 = time.monotonic()
            r = _post(stack, POLL.format(sid=sid, token=token), timeout=10)
            worst = max(worst, time.monotonic() - t0)
            assert 200 == r.status_code
        assert worst < 2.0, f"a poll took {worst:.2f} s with 500 slow connections held"

        def all_closed():
            for s in held:
                s.settimeout(0.01)
                try:
                    while s.recv(4096):
                        pass
                except (socket.timeout, BlockingIOError):
                    return False
                except OSError:
                    pass
            return True
        wait_for(all_closed, 20, 0.5, what="the slow connections to be closed by the server")
        answer = b""
        s = _held(port, half_body)
        s.settimeout(10)
        while chunk := s.recv(4096):
            answer += chunk
        assert b" 408 " in answer.split(b"\r\n", 1)[0] and b"did not arrive within 3 s" in answer
    finally:
        for s in held:
            s.close()
        stack.stop()


@pytest.mark.parametrize("size", [70_000])
def test_oversized_headers_are_refused(bare_stack, size):  # noqa: F811
    """A request line or header block beyond the façade's header buffer is refused, not read on."""
    with socket.create_connection(("127.0.0.1", bare_stack.config.facade_port)) as s:
        s.sendall(b"GET /" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        first = s.recv(4096).split(b"\r\n", 1)[0]
    assert first.startswith(b"HTTP/1.1 4"), first


def test_odd_files_where_the_facade_writes_neither_hang_nor_follow_links(tmp_path, devauth):  # noqa: F811
    """A FIFO as notifications.txt gets a clear fault at once; a symlinked facade.json is replaced, its target untouched."""
    from facade_harness import Soap
    stack = make_stack(tmp_path / "s", devauth)
    try:
        soap, token, sid = Soap(stack.wsdl), devauth.token(), new_sid("odd")
        soap.call("zeep", "startWaiter", sid, token, stack.extra(), 30)
        run = stack.spool / "runs" / sid
        stack.wait_state(sid, {"RUNNING"})
        (run / "notifications.txt").unlink(missing_ok=True)  # the shim creates it for the program's fd 3
        os.mkfifo(run / "notifications.txt")
        outside = tmp_path / "outside.txt"
        outside.write_bytes(b"x" * 200)
        (run / "facade.json").unlink(missing_ok=True)
        (run / "facade.json").symlink_to(outside)
        t0 = time.monotonic()
        f = soap.fault("zeep", "notifyService", sid, token, "hello")
        assert time.monotonic() - t0 < 5
        assert "ServiceUnavailable" in f.code and "not a regular file: FIFO" in f.message
        assert "<html" in __import__("base64").b64decode(
            soap.call("zeep", "getServiceStatus", sid, token).status_base64).decode()
        assert b"x" * 200 == outside.read_bytes()
        assert not (run / "facade.json").is_symlink()
    finally:
        stack.stop()
