"""A lean HTTP/1.1 load generator: pre-built SOAP POSTs over asyncio protocols.

On a 2-core machine the client competes with the server for CPU, so it does
as little as possible per request: the request bytes are built once, a
response is parsed only far enough to find its end (Content-Length or
chunked) and its status, and a latency is two perf_counter() calls. The
caller gets every latency and the CPU seconds this process used, to report
the client's share honestly.

* closed_loop: C connections, each sends its next request as soon as the
  previous answer is in (throughput; keep-alive).
* open_loop: requests at scheduled times, each on a new connection, whatever
  the answers are doing (the workflow manager's polling; latency counted from
  the scheduled time, so a stalled client or server cannot hide queueing).
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence


def post(host: str, port: int, path: str, body: bytes, action: str = "", keep_alive: bool = True) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("" if keep_alive else "Connection: close\r\n") + "\r\n")
    return head.encode() + body


class HTTPError(Exception):
    pass


class _Conn(asyncio.Protocol):
    """One connection, one request in flight."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HTTPError(f"connection lost: {exc}"))

    def data_received(self, data):
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        end = _response_end(self.buf)
        if end is None:
            return
        response = bytes(self.buf[:end])
        del self.buf[:end]
        self.waiter.set_result(response)

    def request(self, data: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


def _response_end(buf: bytearray) -> int | None:
    """Index just past one complete response in buf, or None."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buf[:head_end]).lower()
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 2)
        length = int(head[i + 17: j if j >= 0 else None])
        end = head_end + 4 + length
        return end if len(buf) >= end else None
    if b"transfer-encoding: chunked" in head:
        pos = head_end + 4
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2 + size + 2
            if len(buf) < pos:
                return None
            if size == 0:
                return pos
    raise HTTPError("response without Content-Length or chunked encoding")


def status_of(response: bytes) -> int:
    return int(response[9:12])


def body_of(response: bytes) -> bytes:
    body = response[response.find(b"\r\n\r\n") + 4:]
    if b"transfer-encoding: chunked" not in response[:response.find(b"\r\n\r\n")].lower():
        return body
    out, pos = bytearray(), 0
    while True:
        line_end = body.find(b"\r\n", pos)
        size = int(body[pos:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[line_end + 2: line_end + 2 + size]
        pos = line_end + 2 + size + 2


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, in completion order
    sent_at: list[float] = field(default_factory=list)    # perf_counter at (scheduled) send
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    client_cpu: float = 0.0  # CPU seconds this process used during the run
    late: list[float] = field(default_factory=list)  # open loop: how late sends were vs schedule
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    @property
    def client_share(self) -> float:
        """The client's CPU as a fraction of one core."""
        return self.client_cpu / self.elapsed if self.elapsed else 0.0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


Check = Callable[[bytes], str | None]  # response -> a kind (counted) or raises / returns None for an error


async def _connect(host: str, port: int) -> _Conn:
    _, conn = await asyncio.get_running_loop().create_connection(_Conn, host, port)
    return conn


async def _closed(host: str, port: int, requests: Sequence[bytes], concurrency: int, duration: float,
                  check: Check | None, warmup: float) -> Result:
    res = Result()
    counter = itertools.count()
    n = len(requests)
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    stop = start + duration

    async def worker():
        conn = await _connect(host, port)
        while True:
            now = loop.time()
            if now >= stop:
                break
            data = requests[next(counter) % n]
            t0 = time.perf_counter()
            try:
                response = await conn.request(data)
            except HTTPError as e:
                res.error(str(e))
                conn = await _connect(host, port)
                continue
            t1 = time.perf_counter()
            if t0 >= t_start[0]:
                _record(res, response, t1 - t0, t0, check)
            if conn.closed:
                conn = await _connect(host, port)
        conn.transport.close()

    t_start = [float("inf")]

    async def timer():
        await asyncio.sleep(max(0.0, start - loop.time()))
        t_start[0] = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, stop - loop.time()))
        res.elapsed = time.perf_counter() - t_start[0]
        res.client_cpu = time.process_time() - cpu0

    await asyncio.gather(timer(), *(worker() for _ in range(concurrency)))
    return res


def _record(res: Result, response: bytes, latency: float, sent: float, check: Check | None) -> None:
    if status_of(response) != 200:
        res.error(f"HTTP {status_of(response)}: {body_of(response)[:200]!r}")
        return
    kind = "ok"
    if check is not None:
        try:
            kind = check(response)
        except Exception as e:  # noqa: BLE001 - counted and shown, never hidden
            res.error(f"{type(e).__name__}: {e}")
            return
    res.kinds[kind] = res.kinds.get(kind, 0) + 1
    res.latencies.append(latency)
    res.sent_at.append(sent)


def closed_loop(host: str, port: int, requests: Sequence[bytes], concurrency: int, duration: float,
                check: Check | None = None, warmup: float = 0.5) -> Result:
    """Closed loop over keep-alive connections; latencies of requests sent after the warm-up."""
    return asyncio.run(_closed(host, port, requests, concurrency, duration, check, warmup))


async def _open(host: str, port: int, schedule: Iterable[tuple[float, bytes]], check: Check | None,
                keep_alive_pool: bool) -> Result:
    """schedule: (seconds from now, request bytes), sorted by time."""
    res = Result()
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task] = set()
    pool: list[_Conn] = []
    t_base = time.perf_counter() + 0.05
    cpu0 = time.process_time()

    async def one(scheduled: float, data: bytes):
        try:
            if keep_alive_pool and pool:
                conn = pool.pop()
            else:
                conn = await _connect(host, port)
            response = await conn.request(data)
        except (HTTPError, OSError) as e:
            res.error(str(e))
            return
        t1 = time.perf_counter()
        _record(res, response, t1 - scheduled, scheduled, check)
        if keep_alive_pool and not conn.closed:
            pool.append(conn)
        else:
            conn.transport.close()

    for offset, data in schedule:
        scheduled = t_base + offset
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        res.late.append(max(0.0, time.perf_counter() - scheduled))
        task = loop.create_task(one(scheduled, data))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    res.elapsed = time.perf_counter() - t_base
    res.client_cpu = time.process_time() - cpu0
    for conn in pool:
        conn.transport.close()
    return res


def open_loop(host: str, port: int, schedule: Iterable[tuple[float, bytes]], check: Check | None = None,
              keep_alive_pool: bool = False) -> Result:
    return asyncio.run(_open(host, port, schedule, check, keep_alive_pool))


async def _one(host: str, port: int, data: bytes) -> bytes:
    conn = await _connect(host, port)
    try:
        return await conn.request(data)
    finally:
        conn.transport.close()


def request_once(host: str, port: int, data: bytes) -> bytes:
    return asyncio.run(_one(host, port, data))


class Session:
    """A synchronous keep-alive connection for sequential measurements (one request at a time)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.loop = asyncio.new_event_loop()
        self.conn: _Conn | None = None

    def request(self, data: bytes) -> bytes:
        return self.loop.run_until_complete(self._request(data))

    async def _request(self, data: bytes) -> bytes:
        if self.conn is None or self.conn.closed:
            self.conn = await _connect(self.host, self.port)
        return await self.conn.request(data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.transport.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


async def _batch(host: str, port: int, requests: Sequence[bytes], concurrency: int, check: Check | None) -> Result:
    res = Result()
    it = iter(requests)
    cpu0, t0 = time.process_time(), time.perf_counter()

    async def worker():
        conn = await _connect(host, port)
        for data in it:
            if conn.closed:
                conn = await _connect(host, port)
            t = time.perf_counter()
            try:
                response = await conn.request(data)
            except HTTPError as e:
                res.error(str(e))
                conn = await _connect(host, port)
                continue
            _record(res, response, time.perf_counter() - t, t, check)
        conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    res.elapsed = time.perf_counter() - t0
    res.client_cpu = time.process_time() - cpu0
    return res


def batch(host: str, port: int, requests: Sequence[bytes], concurrency: int, check: Check | None = None) -> Result:
    """Send every request exactly once over `concurrency` keep-alive connections."""
    return asyncio.run(_batch(host, port, requests, concurrency, check))
