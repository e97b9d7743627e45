import time; T0 = time.time()  # noqa: E702 - the first line of code: when the program starts running
"""Benchmark program: stamp.py FIRST LAST HOLD_MS

Writes the CLOCK_REALTIME of its first line to FIRST, sleeps HOLD_MS, writes
the time right before it exits to LAST. Run with `python -S`, like the floor
it is compared with (bench: a direct subprocess.Popen of the same command).
"""
import os
import sys


def put(path, value):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, repr(value).encode())
    os.close(fd)


put(sys.argv[1], T0)
hold = int(sys.argv[3]) / 1000.0
if hold:
    time.sleep(hold)
put(sys.argv[2], time.time())
