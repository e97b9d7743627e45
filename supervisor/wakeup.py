"""The daemon's wake-up when a file arrives in incoming/ or commands/: an inotify descriptor its loop selects on.

watchdog's observer brought the same news through three threads (its inotify
reader, its event queue, the handler that wrote the loop's wake pipe): on the
path from a spec's arrival to its start, each hop was a thread wake-up and a
hand-over of the GIL, ~0.7 ms in all on a loaded 2-core machine. Read by the
loop itself, the kernel's descriptor is one wake-up. It stays a wake-up call,
never the source of truth: a lost or overflowed event costs the reconcile
period, as before. Where inotify cannot be had, the daemon falls back to
watchdog (supervisor/daemon.py).
"""
from __future__ import annotations

import ctypes
import os

# <sys/inotify.h>: only what can bring work, so that the peers that read these directories (a console,
# jobctl) cost the daemon no wake-up (no open, access or close-without-write events)
IN_MODIFY, IN_ATTRIB, IN_MOVED_TO, IN_CREATE = 0x2, 0x4, 0x80, 0x100
MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_TO | IN_CREATE


class Watch:
    """A non-blocking inotify descriptor watching some directories (not their subdirectories)."""

    def __init__(self, directories: list[str]):
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for d in directories:
            if libc.inotify_add_watch(fd, os.fsencode(d), MASK) < 0:
                err = ctypes.get_errno()
                os.close(fd)
                raise OSError(err, f"cannot watch {d}: {os.strerror(err)}")
        self.fd = fd

    def drain(self) -> None:
        """Read every pending event (what they say does not matter: the loop looks at the directories)."""
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
