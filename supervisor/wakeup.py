"""The daemon's wake-up when a file arrives in incoming/ or commands/: an inotify descriptor its loop selects on.

watchdog's observer brought the same news through three threads (its inotify
reader, its event queue, the handler that wrote the loop's wake pipe): on the
path from a spec's arrival to its start, each hop was a thread wake-up and a
hand-over of the GIL, ~0.7 ms in all on a loaded 2-core machine. Read by the
loop itself (through inotify_simple), the kernel's descriptor is one wake-up. It stays a wake-up call,
never the source of truth: a lost or overflowed event costs the reconcile
period, as before. Where inotify cannot be had, the daemon falls back to
watchdog (supervisor/daemon.py).
"""
from __future__ import annotations

from inotify_simple import INotify, flags

# only what can bring work, so that the peers that read these directories (a console, jobctl) cost the
# daemon no wake-up (no open, access or close-without-write events)
MASK = flags.MODIFY | flags.ATTRIB | flags.MOVED_TO | flags.CREATE


class Watch:
    """A non-blocking inotify descriptor watching some directories (not their subdirectories)."""

    def __init__(self, directories: list[str]):
        self._inotify = INotify(nonblocking=True)
        try:
            for d in directories:
                self._inotify.add_watch(d, MASK)
        except OSError:
            self._inotify.close()
            raise
        self.fd = self._inotify.fileno()

    def drain(self) -> None:
        """Read every pending event (what they say does not matter: the loop looks at the directories)."""
        self._inotify.read(timeout=0)

    def close(self) -> None:
        self._inotify.close()
