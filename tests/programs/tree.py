"""Test program: starts a grandchild that ignores SIGTERM, records both pids, waits."""
import os
import subprocess
import sys
import time

pids_file = sys.argv[1]
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
with open(pids_file + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}\n")
os.replace(pids_file + ".tmp", pids_file)
print("tree started", flush=True)
time.sleep(600)
