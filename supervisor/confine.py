"""A job's program without the supervisor's privileges: its cgroups, its own user, its working directory, its limits.

The shim (python -S, standard library only) imports this module and starts
the program with `spawn`: fork, then in the child, before exec and in this
order: enter the attempt's cgroups (as the supervisor's user: the job's user
may not move processes; none where the supervisor moved a spare shim in
already: the program is born inside), take back the shim's oom_score_adj (a
spare shim in the attempt's cgroup is kept from the OOM killer, not the program), open
the working directory (the supervisor may reach it, the job's user may not
traverse its parents), RLIMIT_CORE 0 and
RLIMIT_NPROC (where no pids cgroup limits processes), umask, no_new_privs
(setuid programs cannot give privileges back), drop supplementary groups and
switch group and user for good, fchdir into the working directory as the
job's user (it fails there, with the reason, if that user may not use it),
exec. A failure of any step reaches the shim as a SpawnError that says which
step and why; nothing runs then.

The daemon side resolves the job's user (`user_name_for`, `lookup_user`) and
asks `switch_problem` whether it can switch users at all.
"""
import fcntl
import os
import pwd
import resource

import _signal as signal  # the C module: `signal` would import enum and cost milliseconds

PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc = None  # (prctl, get_errno) once loaded: ctypes costs ~3 ms, so a spare shim loads it ahead of need


class SpawnError(OSError):
    """The program could not be started; strerror says which step failed and why."""

    def __str__(self):
        return self.strerror


class JobUser:
    """The unprivileged user a job's program runs as."""
    __slots__ = ("name", "uid", "gid")

    def __init__(self, name, uid, gid):
        self.name, self.uid, self.gid = name, uid, gid

    def __repr__(self):
        return f"JobUser({self.name!r}, uid={self.uid}, gid={self.gid})"


def user_name_for(project, job_user, project_users):
    """The user a project's jobs run as: its own from the mapping, else job_user; None: not configured."""
    return project_users.get(project) or job_user or None


def lookup_user(name):
    """The JobUser called name; ValueError with the reason if it cannot separate a job from the supervisor."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"job user {name!r} does not exist "
                         f"(create it: useradd --system --no-create-home {name})") from None
    if pw.pw_uid == 0:
        raise ValueError(f"job user {name!r} is uid 0: its jobs would keep every privilege")
    if pw.pw_uid == os.geteuid():
        raise ValueError(f"job user {name!r} is the supervisor's own user (uid {pw.pw_uid}): nothing is kept apart")
    return JobUser(name, pw.pw_uid, pw.pw_gid)


def switch_problem(status_file="/proc/self/status"):
    """None if this process may switch users (CAP_SETUID and CAP_SETGID, as root has), else why not."""
    try:
        with open(status_file) as f:
            caps = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    except (OSError, ValueError, IndexError):
        caps = 0
    if caps & (1 << 6) and caps & (1 << 7):  # CAP_SETGID, CAP_SETUID
        return None
    return (f"not isolated: cannot switch users: running as uid {os.geteuid()} "
            f"without CAP_SETUID and CAP_SETGID (run the supervisor as root)")


class Plan:
    """What the child does between fork and exec; every field optional.

    cgroup_procs: cgroup.procs files to enter (supervisor/cgroups.py
    Attempt.procs_files()); uid/gid: the job's user; workdir: its working
    directory; umask (027: other users, other projects' among them, cannot
    read what the job writes); nproc: RLIMIT_NPROC (counts every process of the
    user, all its jobs together: a fallback where no pids cgroup exists);
    no_new_privs; oom_score_adj: the program's, where its shim's was lowered.
    """
    __slots__ = ("cgroup_procs", "uid", "gid", "workdir", "umask", "nproc", "no_new_privs", "oom_score_adj")
    _INTS = ("uid", "gid", "umask", "nproc", "oom_score_adj")

    def __init__(self, cgroup_procs=(), uid=None, gid=None, workdir=None, umask=0o027, nproc=None,
                 no_new_privs=True, oom_score_adj=None):
        if (uid is None) != (gid is None):
            raise ValueError("a job's user needs both uid and gid")
        self.cgroup_procs, self.uid, self.gid, self.workdir = tuple(cgroup_procs), uid, gid, workdir
        self.umask, self.nproc, self.no_new_privs = umask, nproc, no_new_privs
        self.oom_score_adj = oom_score_adj

    def to_fields(self):
        """key=value strings (a cgroup= per file) for the shim's argv or job message."""
        fields = ["cgroup=" + p for p in self.cgroup_procs]
        fields += [f"{k}={getattr(self, k)}" for k in self._INTS + ("workdir",) if getattr(self, k) is not None]
        return fields + [f"no_new_privs={int(self.no_new_privs)}"]

    @classmethod
    def from_fields(cls, fields):
        """The Plan of to_fields(); ValueError on anything else."""
        kwargs, procs = {}, []
        for field in fields:
            key, sep, value = field.partition("=")
            if not sep:
                raise ValueError(f"confinement field {field!r}: expected key=value")
            if key == "cgroup":
                procs.append(value)
            elif key in cls._INTS:
                kwargs[key] = int(value)
            elif key == "workdir":
                kwargs[key] = value
            elif key == "no_new_privs":
                kwargs[key] = value == "1"
            else:
                raise ValueError(f"confinement field {key!r} is unknown")
        return cls(procs, **kwargs)


def preload():
    """Load prctl() through ctypes now rather than between fork and exec."""
    global _libc
    if _libc is None:
        import ctypes
        _libc = (ctypes.CDLL(None, use_errno=True).prctl, ctypes.get_errno)


def _step(what, fn, *args):
    """Run one step of the child's preparation; a failure says which step."""
    try:
        return fn(*args)
    except OSError as e:
        raise SpawnError(e.errno or 0, f"{what}: {e.strerror or e}") from None


def _enter_cgroup(path):
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")  # "0": the writing process itself
    finally:
        os.close(fd)


def _write_oom_score_adj(value):
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _no_new_privs():
    preload()
    prctl, get_errno = _libc
    if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = get_errno()
        raise OSError(err, os.strerror(err))


def _switch_user(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise OSError(0, "the ids did not change")


def _drop_capabilities():
    """Clear every capability left after the switch to the job's user.

    A supervisor that is not root gets CAP_SETUID and the like as ambient
    capabilities (systemd's AmbientCapabilities=, podman's --cap-add): a switch
    between two non-zero uids keeps them, and exec would hand them to the program.
    """
    preload()
    import ctypes  # loaded by preload()
    prctl, get_errno = _libc
    if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        err = get_errno()
        raise OSError(err, os.strerror(err))
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    if ctypes.CDLL(None, use_errno=True).capset(header, (ctypes.c_uint32 * 6)()) != 0:  # all sets empty
        err = get_errno()
        raise OSError(err, os.strerror(err))


def prepare_child(plan):
    """In the forked child, just before exec: apply the plan, in the module docstring's order."""
    for path in plan.cgroup_procs:
        _step(f"cannot enter cgroup {os.path.dirname(path)}", _enter_cgroup, path)
    if plan.oom_score_adj is not None:
        _step("cannot reset oom_score_adj", _write_oom_score_adj, plan.oom_score_adj)
    dirfd = None
    if plan.workdir is not None:
        dirfd = _step(f"cannot open working directory {plan.workdir}", os.open, plan.workdir,
                      os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    _step("cannot set RLIMIT_CORE", resource.setrlimit, resource.RLIMIT_CORE, (0, 0))
    if plan.nproc is not None:
        _step("cannot set RLIMIT_NPROC", resource.setrlimit, resource.RLIMIT_NPROC, (plan.nproc, plan.nproc))
    if plan.umask is not None:
        os.umask(plan.umask)
    if plan.no_new_privs:
        _step("cannot set no_new_privs", _no_new_privs)
    if plan.uid is not None:
        _step(f"cannot switch to uid {plan.uid} gid {plan.gid}", _switch_user, plan.uid, plan.gid)
        _step("cannot drop capabilities", _drop_capabilities)
    if dirfd is not None:
        who = f"uid {os.getuid()}"
        _step(f"{who} cannot use working directory {plan.workdir}", os.fchdir, dirfd)
        os.close(dirfd)


def spawn(argv, env, stdio, plan, sigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)):
    """Start argv confined by plan; its pid once it has exec'd, or SpawnError saying which step failed.

    stdio: the fds that become its 0, 1, 2 (and 3... if more are given: the
    shim passes notifications as 3), each at least len(stdio) so that no dup2
    overwrites one still to come; every other fd is closed in the child. sigdef: signals reset to their default
    (Python ignores SIGPIPE; the shim catches SIGTERM, SIGINT, SIGHUP).
    It forks, so it is for a single-threaded caller: the shim. The fork and
    the child's Python before exec cost ~1.5 ms (its pages copied as it
    touches them) more than posix_spawn, which a plan with nothing to do in
    the child takes (`_spawn_plain`); entering cgroups ~0.1 ms each.
    """
    if len(stdio) < 3 or min(stdio) < len(stdio):
        raise ValueError(f"stdio {stdio!r}: three descriptors or more, each at least {len(stdio)}")
    if (not plan.cgroup_procs and plan.uid is None and plan.nproc is None and not plan.no_new_privs
            and os.path.isabs(argv[0])):
        return _spawn_plain(argv, env, stdio, plan, sigdef)
    r, w = os.pipe2(os.O_CLOEXEC)
    if w < len(stdio):  # clear of the descriptors the program gets
        w, low = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, len(stdio)), w
        os.close(low)
    pid = os.fork()
    if pid == 0:  # the child: report a failure through w, never return
        try:
            os.close(r)
            for sig in sigdef:
                signal.signal(sig, signal.SIG_DFL)
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            os.closerange(len(stdio), w)
            os.closerange(w + 1, 1 << 20)
            prepare_child(plan)
            _step(f"cannot start {argv[0]}", os.execvpe, argv[0], argv, env)
        except SpawnError as e:
            report = f"{e.errno}:{e.strerror}"
        except BaseException as e:  # a bug here must still end the child and reach the shim
            report = f"0:cannot start {argv[0]}: {type(e).__name__}: {e}"
        try:
            os.write(w, report.encode(errors="replace")[:4000])
        finally:
            os._exit(127)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    if not chunks:
        return pid
    os.waitpid(pid, 0)
    code, _, message = b"".join(chunks).decode(errors="replace").partition(":")
    raise SpawnError(int(code) if code.isdigit() else 0, message)


def _spawn_plain(argv, env, stdio, plan, sigdef):
    """spawn() by posix_spawn (vfork: no page of the caller copied, no Python in the child) for a plan whose
    steps the child can inherit: the working directory, umask and oom_score_adj (the caller's, set around
    the call: a spare shim kept from the OOM killer takes its protection back after, as it may: it got it
    from a supervisor allowed to give it) and RLIMIT_CORE 0 (lowered in the caller for good: the shim never
    wants a core dump)."""
    _step("cannot set RLIMIT_CORE", resource.setrlimit, resource.RLIMIT_CORE, (0, 0))
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited(len(stdio))]
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    umask = os.umask(plan.umask) if plan.umask is not None else None
    kept_from_oom = None
    if plan.oom_score_adj is not None:
        kept_from_oom = _read_oom_score_adj()
        _step("cannot reset oom_score_adj", _write_oom_score_adj, plan.oom_score_adj)
    try:
        if plan.workdir is not None:
            _step(f"cannot open working directory {plan.workdir}", os.chdir, plan.workdir)
        return _step(f"cannot start {argv[0]}", lambda: os.posix_spawn(argv[0], argv, env, file_actions=actions,
                                                                     setsigdef=sigdef))
    finally:
        if umask is not None:
            os.umask(umask)
        os.fchdir(here)
        os.close(here)
        if kept_from_oom is not None:
            try:
                _write_oom_score_adj(kept_from_oom)
            except OSError:
                pass  # the shim may be chosen like any process then; its program is as it should be


def _read_oom_score_adj():
    with open("/proc/self/oom_score_adj", "rb") as f:
        return int(f.read())


def _inherited(first):
    """The caller's descriptors from `first` up that exec would not close (no FD_CLOEXEC)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd >= first and not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                found.append(fd)
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return found
