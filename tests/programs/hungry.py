"""Test program: uses a known amount of CPU time and memory, or more than its limits.

argv: MODE ARG. burn SECONDS: touch MIB MiB (the environment's HUNGRY_MIB,
default 0), use CPU until the process has used SECONDS in all, exit 0. hog MIB: touch
memory a MiB at a time up to MIB. forks N: start up to N sleeping children,
print how many it got. spew BYTES: write that many bytes to stdout.
"""
import os
import sys
import time

mode, arg = sys.argv[1], int(sys.argv[2])
if mode == "burn":
    held = bytearray(int(os.environ.get("HUNGRY_MIB", "0")) << 20)
    for i in range(0, len(held), 4096):
        held[i] = 1  # every page, so it is really used
    while time.process_time() < arg:  # the process's CPU time in all: touching the pages counts too
        pass
    print(f"burnt {arg} s, touched {len(held) >> 20} MiB", flush=True)
elif mode == "hog":
    chunks = []
    for _ in range(arg):
        chunks.append(b"x" * (1 << 20))
    print(f"hog: got {arg} MiB", flush=True)
elif mode == "forks":
    got = 0
    for _ in range(arg):
        try:
            pid = os.fork()
        except OSError as e:
            print(f"forks: refused after {got}: {e.strerror}", flush=True)
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        got += 1
    with open("forks.txt", "w") as f:
        f.write(str(got))
elif mode == "spew":
    block = b"y" * 65535 + b"\n"
    for _ in range(arg // len(block)):
        sys.stdout.buffer.write(block)
    sys.stdout.flush()
    print("spew: done", file=sys.stderr, flush=True)
