"""S5: from the program's last line to the first getServiceStatus that answers COMPLETED."""
from __future__ import annotations

import statistics
import time

from .. import httpload, soap
from ..report import Figure, Target, value_of
from ..stats import summary
from ..system import HOST, MS, STAMP, Bench, log


def s5_exit_to_completed(b: Bench) -> None:
    """From the program's last line to the first getServiceStatus that answers COMPLETED."""
    plan = b.plan
    log(f"S5 exit->COMPLETED: {plan.exit_samples} jobs polled every 5 ms")
    session = httpload.Session(HOST, b.env.port)
    lat, periods = [], []
    try:
        for i in range(plan.exit_samples):
            sid, tok = f"exit-{i:04d}", b.token(i)
            soap.not_fault(session.request(b.ours(STAMP, soap.start_body(
                STAMP[0], "startBenchStamp", sid, tok, b.auth.extra(), [("holdMs", 300)]))))
            poll = b.ours(STAMP, soap.status_body(STAMP[0], sid, tok))
            deadline, last_sent = time.monotonic() + 30, None
            while True:
                sent = time.time()
                kind = soap.status_kind(session.request(poll))
                seen = time.time()
                if kind == "completed":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{sid}: no COMPLETED within 30 s")
                last_sent = sent
                time.sleep(0.005)
            exited = float(b.attempt_file(sid, "last.txt").read_text())
            lat.append(seen - exited)
            if last_sent is not None:
                periods.append(sent - last_sent)
            if i == 0:
                answer = soap.zeep_spot_check(f"http://{HOST}:{b.env.port}{b.env.context_root}/{STAMP[1]}?wsdl",
                                              "getServiceStatus", sid, tok)
                b.report.notes.append(f"zeep spot check (S5): getServiceStatus of a finished job parses against "
                                      f"the WSDL: status_base64={answer.status_base64!r}, last={answer.last!r}")
    finally:
        session.close()
    s, f = summary(lat), summary(b.floor_exit)
    b.report.add(Figure("S5", "program exit → COMPLETED visible, p50", "ms", value_of(s, scale=MS),
                        value_of(f, scale=MS), "parent's waitpid", "{:.1f}"))
    b.report.target(Target("S5", "exit→COMPLETED p50, seen through polls (issue 20)", s["median"] * MS, 8, "<=", "ms",
                           f"waitpid floor {f['median'] * MS:.1f} ms"))
    b.report.target(Target("S5", "exit→COMPLETED (worst of the samples)", s["max"] * MS, 200, "<=", "ms",
                           f"p50 {s['median'] * MS:.1f} ms; poll period {statistics.median(periods) * MS:.1f} ms"
                           if periods else ""))
