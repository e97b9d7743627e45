"""Attempt cgroups on this machine, for real: kill reaches every process, limits hold, usage is right.

They need root and writable cgroups (these machines: hybrid v1 + unified).
Elsewhere they are skipped with the reason; under CI (CI set) a machine
without them is a failure, never a silent skip. Each layout (hybrid, v1 only,
v2 only) gets a parent cgroup of its own, removed at the end.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil

from jobs.usage import Usage
import pytest

from supervisor import cgroups, confine
from supervisor.cgroups import Limits

PY = sys.executable
LAYOUTS = {"hybrid": (1, 2), "v1": (1,), "v2": (2,)}


def _layout(versions: tuple[int, ...]) -> cgroups.Layout:
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("cgroup tests need root (they create cgroups); with CI set this fails instead")
    layout = cgroups.setup(parent=f"spoolsoap-test-{uuid.uuid4().hex[:8]}", versions=versions)
    if layout.unavailable:
        if os.environ.get("CI"):
            pytest.fail(layout.unavailable)
        pytest.skip(layout.unavailable)
    return layout


@pytest.fixture(params=list(LAYOUTS), ids=list(LAYOUTS))
def layout(request):
    """Each layout this machine has, with its own parent cgroup, emptied and removed at the end."""
    yield from _layouts(LAYOUTS[request.param])


@pytest.fixture
def full_layout():
    """The layout the supervisor would use here (every controller this machine has)."""
    yield from _layouts((1, 2))


def _layouts(versions):
    layout = _layout(versions)
    yield layout
    for name in layout.leftovers():
        attempt = layout.attempt(name)
        attempt.kill()
        attempt.remove()
    for h in layout.hierarchies:
        os.rmdir(h.base)


def spawn_in(attempt: cgroups.Attempt, code: str, tmp_path: Path, *args: str) -> int:
    """Start `python -c code args` inside the attempt's cgroups, the way the shim will; its pid."""
    out = os.open(tmp_path / "out.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        plan = confine.Plan(cgroup_procs=attempt.procs_files())
        return confine.spawn([PY, "-S", "-c", textwrap.dedent(code), *args], dict(os.environ), (null, out, out), plan)
    finally:
        os.close(out)
        os.close(null)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for_file(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} not written in {timeout} s")


def test_kill_ends_a_double_forked_setsid_grandchild(layout, tmp_path):
    """A grandchild that forks twice and calls setsid() is still in the cgroup, and kill() ends it."""
    attempt = layout.create(cgroups.attempt_name("escape", 1))
    pid = spawn_in(attempt, """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open(sys.argv[1], "w") as f:
                    f.write(f"{os.getpid()}\\n")
                time.sleep(300)
            os._exit(0)
        os.wait()
    """, tmp_path, str(tmp_path / "grandchild"))
    os.waitpid(pid, 0)  # the program itself has ended: only the escaped grandchild is left
    grandchild = int(wait_for_file(tmp_path / "grandchild"))
    assert not gone(grandchild)
    assert grandchild in attempt.pids()
    assert psutil.Process(grandchild).ppid() != pid
    assert attempt.kill() is None
    assert gone(grandchild)
    assert attempt.is_empty()
    assert attempt.remove() is None
    assert layout.leftovers() == []


def test_a_process_added_from_outside_is_killed_with_the_attempt(layout):
    """Attempt.add (adoption): a running process put in afterwards ends with the attempt."""
    pid = os.posix_spawn("/bin/sleep", ["sleep", "300"], {})
    try:
        attempt = layout.create("adopted@1")
        attempt.add(pid)
        assert attempt.pids() == {pid}
        assert attempt.kill() is None
        assert os.waitpid(pid, 0)[1] == signal.SIGKILL
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_the_layout_says_where_each_role_lives(layout, request):
    """describe() names the kind and the hierarchy of every role (for the start-up log and /readyz)."""
    versions = LAYOUTS[request.node.callspec.params["layout"]]
    if versions != (1, 2):
        assert layout.kind == f"v{versions[0]}"
    text = layout.describe()
    assert text.startswith(f"cgroups {layout.kind}: ")
    for role, h in layout.roles.items():
        assert role in text and h.base in text
    assert "kill" in layout.roles and "cpuacct" in layout.roles


def test_kill_of_a_fork_loop_leaves_nothing(layout, tmp_path):
    """Processes forking as fast as they can while being killed: none is left afterwards."""
    attempt = layout.create("forker@1", Limits(pids=200) if "pids" in layout.roles else Limits())
    pid = spawn_in(attempt, """
        import os, time
        while True:
            try:
                if os.fork() == 0:
                    time.sleep(0.05)
            except OSError:
                time.sleep(0.01)
    """, tmp_path)
    deadline = time.monotonic() + 10
    while len(attempt.pids()) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert attempt.kill() is None
    os.waitpid(pid, 0)
    assert attempt.is_empty()


def test_memory_hog_is_oom_killed_and_the_oom_is_told(full_layout, tmp_path):
    """300 MB under a 100 MB limit: SIGKILL by the kernel, oom_kills counted, the reason in words."""
    limits = Limits(memory_bytes=100 << 20)
    attempt = full_layout.create("hog@1", limits)
    assert attempt.unenforced == ()
    pid = spawn_in(attempt, "b = b'x' * (300 << 20)\nprint('survived', flush=True)\n", tmp_path)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    usage = attempt.usage()
    assert usage.oom_kills and usage.oom_kills >= 1
    assert cgroups.oom_reason(usage, limits) == "out of memory: used more than its 100 MiB limit"
    assert usage.memory_peak_bytes <= 100 << 20
    assert "survived" not in (tmp_path / "out.txt").read_text()


def test_fork_bomb_stops_at_the_process_limit(full_layout, tmp_path):
    """With pids 20, fork fails (EAGAIN) once 20 processes run in the attempt."""
    attempt = full_layout.create("bomb@1", Limits(pids=20))
    pid = spawn_in(attempt, """
        import os, time
        n = 0
        while n < 1000:
            try:
                if os.fork() == 0:
                    time.sleep(300)
                n += 1
            except BlockingIOError as e:
                print(f"forked {n}, then {e.strerror}", flush=True)
                break
    """, tmp_path)
    os.waitpid(pid, 0)
    text = (tmp_path / "out.txt").read_text()
    assert text.startswith("forked 19, then Resource temporarily unavailable"), text
    assert len(attempt.pids()) == 19
    assert attempt.kill() is None


BURN = """
    import time
    while time.process_time() < 1.0:
        for _ in range(20000):  # user time: process_time() itself is a system call
            pass
"""


def test_cpu_time_of_a_one_second_burner_is_within_ten_percent(layout, tmp_path):
    """CPU user + system seconds of the cgroup match the kernel's rusage of the program, and ~1 s."""
    attempt = layout.create("burn@1")
    pid = spawn_in(attempt, BURN, tmp_path)
    _, status, ru = os.wait4(pid, 0)
    assert status == 0
    usage = attempt.usage()
    measured = usage.cpu_user_s + usage.cpu_system_s
    expected = ru.ru_utime + ru.ru_stime
    assert abs(measured - expected) <= 0.1 * expected, (usage, ru)
    assert 0.9 <= measured <= 1.3
    assert abs(usage.cpu_user_s - ru.ru_utime) <= 0.1 * expected, (usage, ru)
    assert usage.cpu_user_s > usage.cpu_system_s


def test_peak_memory_of_fifty_megabytes_is_within_ten_percent(full_layout, tmp_path):
    """The cgroup's peak memory is the program's own high-water mark (VmHWM), within 10 %."""
    attempt = full_layout.create("touch@1")
    pid = spawn_in(attempt, """
        b = b"x" * (50 << 20)
        hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        print(int(hwm.split()[1]) * 1024, flush=True)
    """, tmp_path)
    os.waitpid(pid, 0)
    hwm = int((tmp_path / "out.txt").read_text())
    peak = attempt.usage().memory_peak_bytes
    assert hwm > 50 << 20
    assert abs(peak - hwm) <= 0.1 * hwm, (peak, hwm)


def test_cpu_limit_holds_a_burner_to_its_share(full_layout, tmp_path):
    """cpus=0.2: one second of wall time gives the program about 0.2 s of CPU."""
    attempt = full_layout.create("slow@1", Limits(cpus=0.2))
    pid = spawn_in(attempt, """
        import time
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
    """, tmp_path)
    os.waitpid(pid, 0)
    usage = attempt.usage()
    assert usage.cpu_user_s + usage.cpu_system_s < 0.35, usage


def test_an_attempt_is_created_below_the_parent_never_at_a_root(full_layout):
    """Every directory of an attempt sits in the configured parent, below this process's own cgroup."""
    attempt = full_layout.create("where@1")
    for path in attempt.procs_files():
        d = os.path.dirname(path)
        assert os.path.isdir(d)
        assert os.path.basename(os.path.dirname(d)).startswith("spoolsoap-test-")
    with pytest.raises(cgroups.CgroupError, match="cannot create cgroup .*where@1: File exists"):
        full_layout.create("where@1")


def test_a_refused_limit_leaves_no_cgroup_behind(full_layout):
    """A limit the kernel refuses raises with the file and reason, and the attempt's directories are gone."""
    with pytest.raises(cgroups.CgroupError, match=r"cannot write '-1' to .*pids.max: Invalid argument"):
        full_layout.create("bad@1", _negative_pids())
    assert full_layout.leftovers() == []


def _negative_pids() -> Limits:
    limits = Limits(pids=1)
    object.__setattr__(limits, "pids", -1)  # past the validation, to see what the kernel says
    return limits


def test_limits_the_layout_cannot_enforce_are_listed(tmp_path):
    """v2 without controllers (the unified hierarchy here): memory and pids limits are named as not enforced."""
    layout = _layout((2,))
    try:
        if "memory" in layout.roles:
            pytest.skip("this machine's v2 hierarchy has a memory controller")
        attempt = layout.create("loose@1", Limits(memory_bytes=100 << 20, pids=5))
        assert attempt.unenforced == ("memory limit not enforced: no memory controller writable here",
                                      "pids limit not enforced: no pids controller writable here")
        assert attempt.remove() is None
        assert "no memory, cpu, pids, io controller writable" in layout.describe()
    finally:
        for h in layout.hierarchies:
            os.rmdir(h.base)


# -- the unavailable path ----------------------------------------------------------

def test_a_nonexistent_cgroup_root_is_reported_plainly(tmp_path):
    """A cgroup2 'mounted' where nothing exists: not isolated, with the path and the reason."""
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 25 0:26 / {tmp_path}/absent rw,nosuid - cgroup2 cgroup2 rw\n")
    own = tmp_path / "cgroup"
    own.write_text("0::/\n")
    layout = cgroups.setup(mountinfo=str(mountinfo), proc_cgroup=str(own))
    assert layout.unavailable == (f"not isolated: no writable cgroup: cannot use {tmp_path}/absent: "
                                  "not a cgroup (no cgroup.procs there)")
    assert not (tmp_path / "absent").exists()
    assert layout.describe() == layout.unavailable
    with pytest.raises(cgroups.CgroupError, match="^not isolated: no writable cgroup"):
        layout.create("any@1")


def test_no_cgroup_filesystem_is_reported_plainly(tmp_path):
    """A machine without cgroup mounts says so."""
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 0:21 / /proc rw - proc proc rw\n")
    layout = cgroups.setup(mountinfo=str(mountinfo))
    assert layout.unavailable == f"not isolated: no writable cgroup: no cgroup filesystem mounted ({mountinfo} lists none)"


def test_an_unprivileged_supervisor_gets_the_reason(tmp_path):
    """As a user without rights on this machine's cgroups, setup() says which one refused and why."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a check as another user")
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 that another user may run")
    user = confine.lookup_user(_test_user())
    code = "from supervisor import cgroups; print(cgroups.setup(parent='spoolsoap-test-x').describe())"
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    w3 = os.dup(w)
    os.close(w)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    pid = confine.spawn([python, "-c", code], env, (null, w3, w3), confine.Plan(uid=user.uid, gid=user.gid, workdir="/"))
    os.close(w3)
    os.close(null)
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    assert text.startswith("not isolated: no writable cgroup: cannot create /sys/fs/cgroup/"), text
    assert "Permission denied" in text


def _test_user() -> str:
    """The unprivileged user the tests switch to (created if missing: useradd --system --no-create-home)."""
    name = "spooljob-test"
    try:
        confine.lookup_user(name)
    except ValueError:
        os.spawnvp(os.P_WAIT, "useradd", ["useradd", "--system", "--no-create-home", name])
    return name


# -- parsing ---------------------------------------------------------------------

def test_mounts_and_own_cgroups_are_read_from_proc():
    """Hybrid mountinfo: v1 controllers (co-mounted ones together), one v2, named hierarchies ignored."""
    text = textwrap.dedent("""\
        31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
        32 25 0:28 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
        33 25 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
        34 25 0:30 / /sys/fs/cgroup/with\\040space rw - cgroup2 cgroup2 rw,nsdelegate
        """)
    mounts = cgroups.read_mounts(text)
    assert mounts == [
        cgroups.Mount(1, "/sys/fs/cgroup/cpu,cpuacct", "/", frozenset({"cpu", "cpuacct"})),
        cgroups.Mount(1, "/sys/fs/cgroup/memory", "/docker/abc", frozenset({"memory"})),
        cgroups.Mount(2, "/sys/fs/cgroup/with space", "/", frozenset()),
    ]
    own = cgroups.read_own("12:cpu,cpuacct:/a\n4:memory:/docker/abc/b\n1:name=systemd:/\n0::/system.slice/x\n")
    assert own == {frozenset({"cpu", "cpuacct"}): "/a", frozenset({"memory"}): "/docker/abc/b",
                   frozenset({"name=systemd"}): "/", 2: "/system.slice/x"}


def test_names_and_limits_are_checked():
    """Attempt names cannot escape the parent or clash with a controller's files; limits name their range."""
    assert cgroups.attempt_name("svc-1.a", 3) == "svc-1.a@3"
    for bad in ("../x", "a/b", "cgroup.procs", "", ".hidden"):
        with pytest.raises(ValueError, match="cgroup name"):
            cgroups.Layout("none", {}).attempt(bad)
    with pytest.raises(ValueError, match="at least 1 MiB"):
        Limits(memory_bytes=1000)
    with pytest.raises(ValueError, match="0.01 to 4096 cores"):
        Limits(cpus=0)
    assert cgroups.size_text(2 << 30) == "2 GiB"
    assert cgroups.size_text(1536 << 20) == "1.5 GiB"


def test_io_bytes_come_from_rusage_where_no_io_controller_counts(full_layout, tmp_path):
    """Without a v2 io controller the cgroup reports no I/O figure (None, not 0); the program's rusage has them."""
    attempt = full_layout.create("io@1")
    null = os.open(os.devnull, os.O_RDWR)
    try:
        pid = confine.spawn(["dd", "if=/dev/zero", f"of={tmp_path}/data", "bs=1M", "count=8", "oflag=direct"],
                            {"PATH": "/usr/bin:/bin"}, (null, null, null), confine.Plan(cgroup_procs=attempt.procs_files()))
    finally:
        os.close(null)
    _, status, ru = os.wait4(pid, 0)
    assert status == 0
    written = Usage.from_rusage(ru).io_write_bytes
    assert abs(written - (8 << 20)) <= 0.1 * (8 << 20), written
    usage = attempt.usage()
    if "io" in full_layout.roles:
        assert abs(usage.io_write_bytes - (8 << 20)) <= 0.1 * (8 << 20), usage
    else:
        assert usage.io_read_bytes is None and usage.io_write_bytes is None
