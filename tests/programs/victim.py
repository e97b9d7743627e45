"""Test program: writes its result and pid, then waits until a notification says "stop"."""
import os
import sys
import time

result, pid_file, notifications = sys.argv[1:4]
with open(result, "w") as f:
    f.write("mine")
with open(pid_file + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pid_file + ".tmp", pid_file)
while True:
    with open(notifications) as f:  # /dev/fd/3: opened again each time, from the start
        if "stop" in f.read():
            break
    time.sleep(0.05)
print("victim: stopped", flush=True)
