"""Control groups for job attempts: where they live on this machine, one per attempt, its limits, its end, its usage.

A process group ends with `killpg` only while every process of the job stays
in it; a grandchild that calls setsid() leaves it. A cgroup keeps every
descendant, however it forked, so the supervisor gives each attempt its own
and ends the attempt by ending the cgroup.

Layouts (`setup` finds out which, once, at start-up):
- v2 (production: systemd with Delegate=yes): one unified hierarchy. Its "no
  internal processes" rule means the supervisor's own cgroup cannot both hold
  processes and hand controllers to children, so the supervisor moves its
  cgroup's processes into a leaf (<own>/spoolsoap-supervisor) and creates
  attempts under <own>/spoolsoap-jobs/.
- v1: one hierarchy per controller (memory, cpu, cpuacct, pids, freezer).
- hybrid (these machines): v1 controllers plus a unified hierarchy without
  controllers, which still has cgroup.kill and cpu.stat; each role takes the
  hierarchy that can fill it, v2 first.
- none writable: `Layout.unavailable` says why in words; jobs fall back to
  process groups and their records say "not isolated: ...".

Attempts live below the supervisor's own cgroup in each hierarchy (or below
a configured parent path), never at a hierarchy's root. The program enters
its cgroups itself, between fork and exec (supervisor/confine.py writes "0"
to each of `Attempt.procs_files()`), so it is inside before it can fork; a
pid written from outside after the spawn (`Attempt.add`) leaves a window in
which a child could be born outside. Moving a process between cgroups costs
a kernel RCU grace period per hierarchy (4.5-30 ms each here), so the local
executor makes a cgroup under a fresh name (`fresh_name`) for its spare shim
ahead of need and moves the spare in (`Attempt.add`, from a thread, while
the spare's interpreter starts: the spare forks nothing before it gets a
job); the program, forked inside, inherits it for free (supervisor/runner.py).

Every failure of the machine is a `CgroupError` (an OSError) or a returned
reason, in words; nothing here fails silently.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass

from jobs.limits import size_text
from jobs.usage import Usage

PARENT = "spoolsoap-jobs"          # attempts: <own cgroup>/spoolsoap-jobs/<name>
LEAF = "spoolsoap-supervisor"      # v2: where the supervisor's own processes move to
CPU_PERIOD_US = 100_000
V2_WANTED = ("memory", "cpu", "pids", "io")
# role -> the v1 controller that fills it; the v2 hierarchy fills a role when it has the controller
# (no v1 io role: blkio's counters stay at 0 on current kernels unless the device is throttled, and v1
# charges buffered writes to the kernel's writeback threads; I/O then comes from the shim's rusage)
ROLES_V1 = {"memory": "memory", "cpu": "cpu", "cpuacct": "cpuacct", "pids": "pids", "freeze": "freezer"}
ROLES_V2 = {"memory": "memory", "cpu": "cpu", "pids": "pids", "io": "io"}  # cpuacct, kill, freeze: core files
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,199}")


class CgroupError(OSError):
    """The machine refused a cgroup operation; the message says which and why."""

    def __str__(self):
        return self.strerror or super().__str__()


@dataclass(frozen=True)
class Limits:
    """What one attempt may use; None: no limit."""
    memory_bytes: int | None = None
    cpus: float | None = None      # cores: 0.5 is half of one core, 2 is two cores
    pids: int | None = None        # processes and threads

    def __post_init__(self):
        if self.memory_bytes is not None and self.memory_bytes < 1 << 20:
            raise ValueError(f"memory limit {self.memory_bytes} bytes: at least 1 MiB")
        if self.cpus is not None and not 0.01 <= self.cpus <= 4096:
            raise ValueError(f"cpu limit {self.cpus}: 0.01 to 4096 cores")
        if self.pids is not None and self.pids < 1:
            raise ValueError(f"process limit {self.pids}: at least 1")


def oom_reason(usage: Usage, limit: Limits) -> str | None:
    """'out of memory: used more than its 100 MiB limit' if the limit killed a process, else None."""
    if not usage.oom_kills:
        return None
    shown = size_text(limit.memory_bytes) + " " if limit.memory_bytes else ""
    return f"out of memory: used more than its {shown}limit"


# -- what is mounted, and where this process is ------------------------------------

@dataclass(frozen=True)
class Mount:
    """One mounted hierarchy: v2, or v1 with its controllers."""
    version: int
    path: str                  # mount point
    root: str                  # the cgroup seen at the mount point
    controllers: frozenset[str]


def read_mounts(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of /proc/self/mountinfo (first mount of each hierarchy)."""
    found: dict[object, Mount] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, path = (_unescape(f) for f in fields[3:5])
        if tail[0] == "cgroup2":
            found.setdefault(2, Mount(2, path, root, frozenset()))
            continue
        opts = set(tail[2].split(","))
        controllers = frozenset(o for o in opts if o in ROLES_V1.values())
        if controllers:  # named hierarchies (name=systemd) hold no controller
            found.setdefault(controllers, Mount(1, path, root, controllers))
    return list(found.values())


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_own(text: str) -> dict[object, str]:
    """This process's cgroup per hierarchy, from /proc/self/cgroup: {2: path, frozenset(names): path}."""
    own: dict[object, str] = {}
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if hid == "0" and names == "":
            own[2] = path
        elif names:
            own[frozenset(names.split(","))] = path
    return own


# -- the layout --------------------------------------------------------------------

@dataclass(frozen=True)
class Hierarchy:
    """A hierarchy the supervisor may write, and where its attempts go."""
    version: int
    base: str                  # the attempts' parent directory
    controllers: frozenset[str]  # usable for attempts (v1: mounted; v2: enabled for the base's children)

    def fills(self, role: str) -> bool:
        if self.version == 2:
            return role in ("cpuacct", "freeze") or ROLES_V2.get(role, "-") in self.controllers
        return ROLES_V1.get(role, "-") in self.controllers


@dataclass(frozen=True)
class Layout:
    """This machine's cgroups as the supervisor may use them; `unavailable` says why not at all."""
    kind: str                              # "v2", "v1", "hybrid" or "none"
    roles: dict[str, Hierarchy]            # memory, cpu, cpuacct, pids, io, freeze, kill -> hierarchy
    unavailable: str | None = None
    notes: tuple[str, ...] = ()            # what is missing and why, for the start-up log and /readyz

    @property
    def hierarchies(self) -> list[Hierarchy]:
        """Every hierarchy an attempt is created in (one per role at most, no repeats)."""
        return list(dict.fromkeys(self.roles.values()))

    def describe(self) -> str:
        """One line for the start-up log and /readyz: where each role lives, or why there are none."""
        if self.unavailable:
            return self.unavailable
        where = {}
        for role, h in self.roles.items():
            where.setdefault(f"v{h.version} {h.base}", []).append(role)
        text = f"cgroups {self.kind}: " + "; ".join(f"{', '.join(r)} in {b}" for b, r in where.items())
        return text + "".join(f"; {n}" for n in self.notes)

    def create(self, name: str, limits: Limits = Limits()) -> Attempt:
        """Make the attempt's cgroups and set its limits; CgroupError (nothing left behind) if refused.

        A limit that no hierarchy here can enforce is not an error: it is
        listed in the attempt's `unenforced`, for the job's record.
        """
        if self.unavailable:
            raise CgroupError(self.unavailable)
        attempt = Attempt(self, _checked_name(name))
        made = []
        try:
            for h in self.hierarchies:
                path = attempt.dir(h)
                _call(os.mkdir, path, 0o755, what=f"cannot create cgroup {path}")
                made.append(path)
            attempt.limit(limits)
        except CgroupError:
            for path in reversed(made):
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            raise
        return attempt

    def attempt(self, name: str) -> Attempt:
        """An attempt's cgroups made earlier (by this or a previous supervisor), to end, read or remove."""
        return Attempt(self, _checked_name(name))

    def leftovers(self) -> list[str]:
        """Names of the attempt cgroups that exist, in any hierarchy (start-up: reconcile them)."""
        names: set[str] = set()
        for h in self.hierarchies:
            try:
                names.update(e.name for e in os.scandir(h.base) if e.is_dir() and _NAME.fullmatch(e.name))
            except OSError:
                pass
        return sorted(names)


def attempt_name(service_id: str, attempt: int) -> str:
    """The cgroup name of one attempt; '@' never occurs in a controller's file names, so no clash."""
    return _checked_name(f"{service_id}@{attempt}")


def fresh_name() -> str:
    """A name for a cgroup made before its attempt is known (a spare shim's); the attempt's record names it."""
    return f"attempt-{secrets.token_hex(8)}"


def _checked_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name.startswith("cgroup."):
        raise ValueError(f"cgroup name {name!r}: letters, digits, '.', '_', '@', '-', at most 200")
    return name


def setup(parent: str = PARENT, leaf: str = LEAF, versions: tuple[int, ...] = (1, 2),
          mountinfo: str = "/proc/self/mountinfo", proc_cgroup: str = "/proc/self/cgroup") -> Layout:
    """Find this machine's cgroups and make the attempts' parent in each one it may write. Once, at start-up.

    parent: relative to the supervisor's own cgroup in each hierarchy, or an
    absolute cgroup path ("/jobs/spool-a"). versions: the hierarchy versions to
    use (tests pin one). On v2 it may move this cgroup's processes into
    `leaf` (see the module's docstring).
    """
    if not parent.strip("/") or ".." in parent.split("/"):
        raise ValueError(f"cgroup parent {parent!r}: a path below a cgroup, without '..'")
    try:
        with open(mountinfo) as f:
            mounts = [m for m in read_mounts(f.read()) if m.version in versions]
        with open(proc_cgroup) as f:
            own = read_own(f.read())
    except OSError as e:
        return _none(f"cannot read {e.filename}: {e.strerror}")
    if not mounts:
        return _none(f"no cgroup filesystem mounted ({mountinfo} lists none)")
    usable: list[Hierarchy] = []
    problems = []
    for m in sorted(mounts, key=lambda m: -m.version):  # v2 first: it kills best
        if m.version == 1 and all(any(h.fills(r) for h in usable) or ROLES_V1[r] not in m.controllers
                                  for r in ROLES_V1):
            continue  # nothing this hierarchy would add: leave it alone
        try:
            usable.append(_prepare(m, own, parent, leaf))
        except CgroupError as e:
            problems.append(str(e))
    if not usable:
        return _none("; ".join(problems))
    roles = {r: h for r in (*ROLES_V1, "io") for h in usable[::-1] if h.fills(r)}  # the first that fills it wins
    roles["kill"] = roles.get("freeze") or usable[0]
    missing = [r for r in ("memory", "cpu", "pids", "io", "cpuacct") if r not in roles]
    notes = tuple(problems) + ((f"no {', '.join(missing)} controller writable",) if missing else ())
    versions_used = {h.version for h in roles.values()}
    kind = {frozenset({1}): "v1", frozenset({2}): "v2"}.get(frozenset(versions_used), "hybrid")
    return Layout(kind, roles, None, notes)


def _none(reason: str) -> Layout:
    return Layout("none", {}, f"not isolated: no writable cgroup: {reason}")


def _prepare(m: Mount, own: dict[object, str], parent: str, leaf: str) -> Hierarchy:
    """The attempts' parent directory in this hierarchy, made and (v2) given its controllers."""
    mine = own.get(2) if m.version == 2 else next(
        (path for key, path in own.items() if key != 2 and key & m.controllers), None)
    if mine is None:
        raise CgroupError(f"{m.path}: this process is in no cgroup of it (/proc/self/cgroup)")
    rel = os.path.relpath(mine, m.root)
    if rel.startswith(".."):
        raise CgroupError(f"{m.path}: this process's cgroup {mine} is outside the mount (root {m.root})")
    own_dir = os.path.normpath(os.path.join(m.path, rel))
    if not os.path.isfile(os.path.join(own_dir, "cgroup.procs")):  # never mkdir -p outside a cgroup filesystem
        raise CgroupError(errno.ENOENT, f"cannot use {own_dir}: not a cgroup (no cgroup.procs there)")
    base = os.path.normpath(os.path.join(m.path, parent.lstrip("/")) if parent.startswith("/")
                            else os.path.join(own_dir, parent))
    if base == os.path.normpath(m.path):
        raise CgroupError(f"{m.path}: attempts would be created at the hierarchy's root")
    _call(os.makedirs, base, 0o755, exist_ok=True, what=f"cannot create {base}")
    if m.version == 1:
        return Hierarchy(1, base, m.controllers)
    if base.startswith(own_dir + "/"):
        _delegate(own_dir, base, leaf)
    return Hierarchy(2, base, frozenset(_read(os.path.join(base, "cgroup.subtree_control")).split()))


def _delegate(own_dir: str, base: str, leaf: str) -> None:
    """v2: enable the wanted controllers from our own cgroup down to the attempts' parent.

    Enabling them in a cgroup that holds processes fails with EBUSY (no
    internal processes, except at the root): then this cgroup's processes,
    the supervisor with them, move into `leaf` first. A controller the parent
    does not delegate is skipped; the layout then takes it from v1 or lists it as missing.
    """
    wanted = [c for c in V2_WANTED if c in _read(os.path.join(own_dir, "cgroup.controllers")).split()]
    steps = [own_dir]
    for part in os.path.relpath(base, own_dir).split("/"):
        steps.append(os.path.join(steps[-1], part))
    for d in steps:
        enabled = _read(os.path.join(d, "cgroup.subtree_control")).split()
        for c in (c for c in wanted if c not in enabled):
            try:
                _write(os.path.join(d, "cgroup.subtree_control"), "+" + c)
            except CgroupError as e:
                if e.errno != errno.EBUSY or d != own_dir:
                    raise
                _move_all(own_dir, os.path.join(own_dir, leaf))
                _write(os.path.join(d, "cgroup.subtree_control"), "+" + c)


def _move_all(src: str, leaf: str) -> None:
    """Move every process of cgroup src into its child leaf (made if missing)."""
    _call(os.makedirs, leaf, 0o755, exist_ok=True, what=f"cannot create {leaf}")
    for _ in range(10):
        pids = _pids(src)
        if not pids:
            return
        for pid in pids:
            try:
                _write(os.path.join(leaf, "cgroup.procs"), str(pid))
            except CgroupError as e:
                if e.errno != errno.ESRCH:
                    raise
    raise CgroupError(f"processes keep appearing in {src}: cannot empty it into {leaf}")


# -- one attempt -----------------------------------------------------------------

class Attempt:
    """One attempt's cgroups: a directory of the same name in each hierarchy of the layout."""

    def __init__(self, layout: Layout, name: str):
        self.layout, self.name = layout, name
        self.unenforced: tuple[str, ...] = ()   # limits asked for that this machine cannot enforce

    def dir(self, h: Hierarchy) -> str:
        return os.path.join(h.base, self.name)

    def _role(self, role: str) -> str | None:
        h = self.layout.roles.get(role)
        return None if h is None else self.dir(h)

    def procs_files(self) -> list[str]:
        """The cgroup.procs files the program writes "0" to, before exec, to be inside from its start."""
        return [os.path.join(self.dir(h), "cgroup.procs") for h in self.layout.hierarchies]

    def add(self, pid: int) -> None:
        """Put a running process in (a spare shim, tests); a process it already forked stays outside."""
        for path in self.procs_files():
            _write(path, str(pid))

    def limit(self, limits: Limits) -> None:
        """Write the limits (a spare's cgroup gets them when a job takes it); CgroupError if refused.
        A limit no hierarchy here can enforce goes to `unenforced`, for the job's record."""
        unenforced = []
        for role, value in (("memory", limits.memory_bytes), ("cpu", limits.cpus), ("pids", limits.pids)):
            if value is None:
                continue
            d = self._role(role)
            if d is None:
                unenforced.append(f"{role} limit not enforced: no {role} controller writable here")
                continue
            v2 = self.layout.roles[role].version == 2
            if role == "memory":
                _write(os.path.join(d, "memory.max" if v2 else "memory.limit_in_bytes"), str(value))
                extra = (("memory.swap.max", "0"), ("memory.oom.group", "1")) if v2 else \
                    (("memory.memsw.limit_in_bytes", str(value)),)  # swap counts too
                for name, text in extra:
                    if os.path.exists(os.path.join(d, name)):
                        _write(os.path.join(d, name), text)
            elif role == "cpu":
                quota = max(1000, round(value * CPU_PERIOD_US))
                if v2:
                    _write(os.path.join(d, "cpu.max"), f"{quota} {CPU_PERIOD_US}")
                else:
                    _write(os.path.join(d, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
                    _write(os.path.join(d, "cpu.cfs_quota_us"), str(quota))
            else:
                _write(os.path.join(d, "pids.max"), str(value))
        self.unenforced = tuple(unenforced)

    def pids(self) -> set[int]:
        """The processes in the attempt's cgroups (zombies leave at exit); the ones that cannot be read count as none."""
        found: set[int] = set()
        for path in self.procs_files():
            try:
                found.update(_pids(os.path.dirname(path)))
            except CgroupError:
                pass
        return found

    def is_empty(self) -> bool:
        return not self.pids()

    def kill(self, timeout: float = 5.0) -> str | None:
        """SIGKILL every process in the attempt and wait until none is left; None, or why some remain.

        v2 writes cgroup.kill (the kernel kills them all, even those being
        forked); v1 freezes the cgroup (no new forks), signals every pid in
        cgroup.procs, thaws, and repeats until it is empty.
        """
        kill_dir = self._role("kill")
        if kill_dir is None:
            return None  # no layout, no attempt cgroup: nothing of it can run
        deadline = time.monotonic() + timeout
        kill_file = os.path.join(kill_dir, "cgroup.kill")
        while left := self.pids():
            if time.monotonic() > deadline:
                shown = ", ".join(map(str, sorted(left)[:10]))
                return f"{len(left)} process(es) still in {kill_dir} {timeout:g} s after SIGKILL: {shown}"
            try:
                if os.path.exists(kill_file):
                    _write(kill_file, "1")
                else:
                    with _Freeze(self._role("freeze"), self.layout.roles.get("freeze")):
                        for pid in self.pids():
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
            except CgroupError as e:
                return str(e)
            time.sleep(0.005)
        return None

    def usage(self) -> Usage:
        """What the attempt used so far (its processes may be gone: the cgroup keeps the counts)."""
        values: dict[str, float | int | None] = {}
        if (d := self._role("cpuacct")) is not None:
            if self.layout.roles["cpuacct"].version == 2:
                stat = _keyed(os.path.join(d, "cpu.stat"))
                values["cpu_user_s"] = _scaled(stat.get("user_usec"), 1e-6)
                values["cpu_system_s"] = _scaled(stat.get("system_usec"), 1e-6)
            else:
                values["cpu_user_s"] = _scaled(_int(os.path.join(d, "cpuacct.usage_user")), 1e-9)
                values["cpu_system_s"] = _scaled(_int(os.path.join(d, "cpuacct.usage_sys")), 1e-9)
        if (d := self._role("memory")) is not None:
            if self.layout.roles["memory"].version == 2:
                events = _keyed(os.path.join(d, "memory.events"))
                values["memory_peak_bytes"] = _int(os.path.join(d, "memory.peak"))
                values["oom_kills"], values["memory_limit_hits"] = events.get("oom_kill"), events.get("max")
            else:
                values["memory_peak_bytes"] = _int(os.path.join(d, "memory.max_usage_in_bytes"))
                values["oom_kills"] = _keyed(os.path.join(d, "memory.oom_control")).get("oom_kill")
                values["memory_limit_hits"] = _int(os.path.join(d, "memory.failcnt"))
        if (d := self._role("io")) is not None:
            values["io_read_bytes"], values["io_write_bytes"] = _io_v2(os.path.join(d, "io.stat"))
        return Usage(**values, source="cgroup")

    def remove(self) -> str | None:
        """Remove the attempt's cgroups (after kill and usage); None, or why one stays."""
        problems = []
        for h in self.layout.hierarchies:
            try:
                os.rmdir(self.dir(h))
            except FileNotFoundError:
                pass
            except OSError as e:
                problems.append(f"cannot remove {self.dir(h)}: {e.strerror}")
        return "; ".join(problems) or None


def remove_trees(names: set[str], mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """End and remove every cgroup named one of `names`, with all below it, in every mounted hierarchy;
    the directories that would not go."""
    with open(mountinfo) as f:
        mounts = read_mounts(f.read())
    found = []
    for m in mounts:
        for top, dirs, _ in os.walk(m.path):
            found += [os.path.join(top, d) for d in dirs if d in names]
            dirs[:] = [d for d in dirs if d not in names]  # its subtree is removed below
    stuck = []
    for base in found:
        tree = [top for top, _, _ in os.walk(base)]
        for d in tree:
            try:
                pids = _pids(d)
            except CgroupError:
                continue  # gone meanwhile
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        stuck += [d for d in reversed(tree) if not _rmdir(d)]  # children first
    return stuck


def _rmdir(d: str, seconds: float = 5.0) -> bool:
    """rmdir, again while the processes just killed leave it (EBUSY) for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            time.sleep(0.01)


class _Freeze:
    """While frozen (v1 freezer.state, v2 cgroup.freeze), no process of the attempt can fork a replacement.

    Without a freezer it does nothing: killing then repeats until no process is left.
    """

    def __init__(self, d: str | None, h: Hierarchy | None):
        name, self.on, self.off = ("cgroup.freeze", "1", "0") if h and h.version == 2 else \
            ("freezer.state", "FROZEN", "THAWED")
        self.file = os.path.join(d, name) if d and h and os.path.exists(os.path.join(d, name)) else None

    def __enter__(self):
        if self.file is None:
            return
        _write(self.file, self.on)
        deadline = time.monotonic() + 1.0
        while not self._settled() and time.monotonic() < deadline:
            time.sleep(0.001)

    def _settled(self) -> bool:
        if self.file.endswith("freezer.state"):
            return _read(self.file).strip() == "FROZEN"
        return _keyed(os.path.join(os.path.dirname(self.file), "cgroup.events")).get("frozen") == 1

    def __exit__(self, *exc):
        if self.file is not None:
            _write(self.file, self.off)


# -- reading and writing cgroup files, with the reason in words ----------------------

def _call(fn, *args, what: str, **kwargs):
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        raise CgroupError(e.errno, f"{what}: {e.strerror}") from None


def _write(path: str, text: str) -> None:
    """One write(2) of text: a cgroup file takes one value per write."""
    def write():
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    _call(write, what=f"cannot write {text!r} to {path}")


def _read(path: str) -> str:
    def read():
        with open(path) as f:
            return f.read()
    return _call(read, what=f"cannot read {path}")


def _pids(d: str) -> set[int]:
    return {int(p) for p in _read(os.path.join(d, "cgroup.procs")).split()}


def _int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _keyed(path: str) -> dict[str, int]:
    """A flat keyed file ("key value" per line): cpu.stat, memory.events, memory.oom_control."""
    try:
        with open(path) as f:
            pairs = (line.split() for line in f)
            return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}
    except OSError:
        return {}


def _scaled(value: int | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _io_v2(path: str) -> tuple[int | None, int | None]:
    """Sum of rbytes and wbytes over the devices of io.stat."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None, None
    total = {"rbytes": 0, "wbytes": 0}
    for key, value in re.findall(r"\b(rbytes|wbytes)=(\d+)", text):
        total[key] += int(value)
    return total["rbytes"], total["wbytes"]
