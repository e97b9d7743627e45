"""Test program: sleeps SECONDS, prints to stderr, exits with CODE."""
import sys
import time

seconds, code = float(sys.argv[1]), int(sys.argv[2])
time.sleep(seconds)
print(f"exiting with {code}", file=sys.stderr, flush=True)
sys.exit(code)
