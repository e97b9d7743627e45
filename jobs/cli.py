"""What jobctl and waiter-client share: the user-facing error, output helpers, the parser, the common exit codes.

Each program adds its own code 3 (jobctl: PENDING, waiter-client: UNREACHABLE)
and documents its codes in its --help epilog and in README.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

OK = 0
FAILED = 1        # refused or failed
USAGE = 2         # bad arguments or configuration
INTERRUPTED = 130


class CliError(Exception):
    """A user-facing failure: one line on stderr and an exit code, never a traceback."""

    def __init__(self, message: str, code: int = FAILED):
        super().__init__(message)
        self.code = code


def out(text: str = "") -> None:
    print(text, flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line plus a hint instead of the full usage."""

    def error(self, message: str):
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def run(prog: str, command: Callable[[], int]) -> int:
    """Run a command: a CliError becomes its line on stderr and its code, Ctrl-C the code 130."""
    try:
        return command()
    except CliError as e:
        note(f"{prog}: {e}")
        return e.code
    except KeyboardInterrupt:
        note(f"{prog}: interrupted")
        return INTERRUPTED


def service_args(prog: str, description: str, argv: list[str] | None) -> None:
    """A service's command line (supervisor, façade, console): --help only; every setting is in the env file."""
    Parser(prog=prog, description=description,
           epilog="Every setting comes from the env file: ENV_FILE, else ./env, else the source checkout's env, "
                  "else /etc/spoolsoap/env (README, Configuration).").parse_args(argv)
