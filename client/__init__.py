"""waiter-client: drive a façade's SOAP services from a terminal, as the workflow manager would.

Modules by role: `statuspage` reads a status_base64 value, `soap` makes the
SOAP calls (suds, clfpy's AuthClient), `settings` finds the services and the
session token, `output` prints replies and errors (text or --json),
`commands` holds the single calls, `follow` the `run` command, `cli` the
arguments; `__main__` is the `waiter-client` entry point.
"""

PROG = "waiter-client"
SERVICE = "Waiter"               # the default --service
SECONDS_INPUT = "secondsToWait"  # what --seconds sets (the Waiter's input)
# Exit codes: OK, FAILED, USAGE and INTERRUPTED come from jobs.cli; waiter-client's own code 3:
UNREACHABLE = 3                  # no answer: connection refused, timeout, not a WSDL at that URL
