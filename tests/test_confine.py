"""A job's program under its own user, for real: what it can no longer reach, and what it still can.

Switching users needs root (or CAP_SETUID and CAP_SETGID); elsewhere these
tests are skipped with the reason, and under CI (CI set) that is a failure.
The user is `spooljob-test`, created if missing (useradd --system --no-create-home).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs import config
from jobs.errors import ConfigError
from supervisor import confine

ROOT = Path(__file__).resolve().parent.parent
USER = "spooljob-test"


@pytest.fixture(scope="module")
def user() -> confine.JobUser:
    problem = confine.switch_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    try:
        return confine.lookup_user(USER)
    except ValueError:
        subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True)
        return confine.lookup_user(USER)


@pytest.fixture
def python() -> str:
    """An interpreter the job's user may execute (the tests' own may sit below /root, mode 0700)."""
    found = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if found is None:
        pytest.skip("no system python3 that another user may run")
    return found


@pytest.fixture
def places(tmp_path, user):
    """A 0700 root directory holding a 0600 root file and the job's working directory (owned by the job's user)."""
    tmp_path.chmod(0o755)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    secret = private / "secret.txt"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    workdir = private / "runs" / "a" / "attempts" / "1"
    workdir.mkdir(parents=True)
    os.chown(workdir, user.uid, user.gid)
    open_secret = tmp_path / "open-secret.txt"  # readable path, 0600 root file
    open_secret.write_text("root only\n")
    open_secret.chmod(0o600)
    return {"private": private, "secret": secret, "workdir": workdir, "open_secret": open_secret}


def run(argv, plan, tmp_path, env=None) -> tuple[int, str]:
    """Spawn argv confined by plan, wait; (exit code, its stdout + stderr)."""
    log = tmp_path / "log.txt"
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = confine.spawn(argv, env or {"PATH": "/usr/bin:/bin"}, (null, out, out), plan)
    finally:
        os.close(out)
        os.close(null)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), log.read_text()


PROBE = """
    import os, sys
    def attempt(what, fn):
        try:
            fn()
            print(what, "allowed")
        except OSError as e:
            print(what, "refused", e.strerror)
    attempt("read secret", lambda: open(sys.argv[1]).read())
    attempt("list private", lambda: os.listdir(sys.argv[2]))
    attempt("read through private", lambda: open(sys.argv[3]).read())
    attempt("write cwd", lambda: open("out.txt", "w").write("mine\\n"))
    attempt("setuid 0", lambda: os.setuid(0))
    print("ids", os.getresuid(), os.getresgid(), os.getgroups(), "umask %o" % os.umask(0))
    print(next(l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")).strip())
    import resource
    print("core", resource.getrlimit(resource.RLIMIT_CORE), "nproc", resource.getrlimit(resource.RLIMIT_NPROC))
    print("cwd", os.getcwd())
"""


def test_switched_user_reaches_only_its_working_directory(user, places, python, tmp_path):
    """The job's user cannot read a 0600 root file nor traverse a 0700 root directory, yet works in its cwd."""
    plan = confine.Plan(uid=user.uid, gid=user.gid, workdir=str(places["workdir"]), nproc=64)
    code, out = run([python, "-S", "-c", textwrap.dedent(PROBE), str(places["open_secret"]),
                     str(places["private"]), str(places["secret"])], plan, tmp_path)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:5] == ["read secret refused Permission denied", "list private refused Permission denied",
                         "read through private refused Permission denied", "write cwd allowed",
                         "setuid 0 refused Operation not permitted"]
    assert lines[5] == f"ids {(user.uid,) * 3} {(user.gid,) * 3} [] umask 27"
    assert lines[6] == "NoNewPrivs:\t1"
    assert lines[7] == "core (0, 0) nproc (64, 64)"
    assert lines[8] == f"cwd {places['workdir']}"
    written = places["workdir"] / "out.txt"
    assert written.read_text() == "mine\n"
    assert (written.stat().st_uid, written.stat().st_mode & 0o777) == (user.uid, 0o640)


def test_without_a_user_the_program_runs_as_the_supervisor(places, python, tmp_path):
    """An empty plan changes no id: the 'not isolated' case runs as before (and still gets no core dumps)."""
    code, out = run([python, "-S", "-c", "import os, resource; print(os.getuid(), resource.getrlimit(resource.RLIMIT_CORE))"],
                    confine.Plan(workdir=str(places["workdir"])), tmp_path)
    assert (code, out) == (0, f"{os.getuid()} (0, 0)\n")


def test_a_working_directory_the_user_may_not_use_is_refused_before_exec(user, places, python, tmp_path):
    """A root 0700 working directory: the spawn fails, saying which user and which directory, and nothing ran."""
    plan = confine.Plan(uid=user.uid, gid=user.gid, workdir=str(places["private"]))
    marker = tmp_path / "ran"
    with pytest.raises(confine.SpawnError) as e:
        run([python, "-S", "-c", f"open({str(marker)!r}, 'w')"], plan, tmp_path)
    assert str(e.value) == f"uid {user.uid} cannot use working directory {places['private']}: Permission denied"
    assert not marker.exists()


def test_a_missing_program_is_reported_with_its_name(tmp_path):
    """exec's failure comes back as the reason, with errno."""
    with pytest.raises(confine.SpawnError) as e:
        run(["/no/such/program", "x"], confine.Plan(no_new_privs=False), tmp_path)
    assert str(e.value) == "cannot start /no/such/program: No such file or directory"
    assert e.value.errno == 2


def test_a_cgroup_that_cannot_be_entered_stops_the_start(tmp_path):
    """Entering a cgroup is not optional: a refused write names the cgroup and nothing runs."""
    with pytest.raises(confine.SpawnError, match=f"^cannot enter cgroup {tmp_path}/gone: No such file or directory$"):
        run(["/bin/true"], confine.Plan(cgroup_procs=[str(tmp_path / "gone" / "cgroup.procs")]), tmp_path)


@pytest.mark.parametrize("privs", ["no_new_privs=1", "no_new_privs=0"])  # fork's path, posix_spawn's
def test_the_program_gets_the_oom_score_adj_the_shim_gives_back(tmp_path, python, privs):
    """A spare shim in the attempt's cgroup keeps itself from the OOM killer; its program must not inherit that,
    and the shim keeps its own."""
    mine = int(Path("/proc/self/oom_score_adj").read_text())
    back = min(mine + 100, 1000)  # raising it needs no privilege: a test that cannot pass by doing nothing
    plan = confine.Plan.from_fields([f"oom_score_adj={back}", privs])  # as the shim gets it in the job message
    code, out = run([python, "-S", "-c", "print(open('/proc/self/oom_score_adj').read().strip())"], plan, tmp_path)
    assert (code, out) == (0, f"{back}\n")
    if os.geteuid() == 0:  # lowering it back takes CAP_SYS_RESOURCE, as the spare shim's supervisor had
        assert mine == int(Path("/proc/self/oom_score_adj").read_text())


def test_only_the_three_given_fds_reach_the_program(tmp_path, python):
    """Every other descriptor of the spawning process is closed before exec (none leaks to the job)."""
    leak = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(leak, True)
    try:
        code, out = run([python, "-S", "-c", "import os; print(sorted(os.listdir('/proc/self/fd')))"],
                        confine.Plan(), tmp_path)
    finally:
        os.close(leak)
    assert (code, out) == (0, "['0', '1', '2', '3']\n")  # 3: the listdir itself


def test_a_plan_without_steps_in_the_child_is_spawned_alike(tmp_path, python):
    """posix_spawn's path (nothing to do between fork and exec): the same working directory, umask, core limit
    and descriptors as the fork's, and the spawning process keeps its own directory and umask."""
    leak = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(leak, True)
    work = tmp_path / "work"
    work.mkdir()
    cwd, umask = os.getcwd(), os.umask(0o022)
    try:
        code, out = run([python, "-S", "-c", "import os, resource; print(os.getcwd(), oct(os.umask(0)), "
                         "resource.getrlimit(resource.RLIMIT_CORE), sorted(os.listdir('/proc/self/fd')))"],
                        confine.Plan(workdir=str(work), no_new_privs=False), tmp_path)
        assert (cwd, 0o022) == (os.getcwd(), os.umask(0o022))
    finally:
        os.close(leak)
        os.umask(umask)
    assert (code, out) == (0, f"{work} 0o27 (0, 0) ['0', '1', '2', '3']\n")
    with pytest.raises(confine.SpawnError) as e:
        run(["/no/such/program"], confine.Plan(no_new_privs=False), tmp_path)
    assert (str(e.value), e.value.errno) == ("cannot start /no/such/program: No such file or directory", 2)


def test_the_plan_travels_as_fields():
    """to_fields / from_fields round trip; an unknown field is refused by name."""
    plan = confine.Plan(["/a/cgroup.procs", "/b/cgroup.procs"], 999, 995, "/w d", 0o027, 20, True)
    again = confine.Plan.from_fields(plan.to_fields())
    assert [getattr(again, k) for k in confine.Plan.__slots__] == [getattr(plan, k) for k in confine.Plan.__slots__]
    with pytest.raises(ValueError, match="'colour' is unknown"):
        confine.Plan.from_fields(["colour=red"])
    with pytest.raises(ValueError, match="both uid and gid"):
        confine.Plan(uid=5)


def test_job_users_resolve_per_project():
    """A project's own user first, else JOB_USER; root and unknown users are refused with the reason."""
    mapping = config.load(None, {"PROJECT_USERS": "alpha:al, beta:be,", "ENV_FILE": os.devnull}).project_users
    assert mapping == {"alpha": "al", "beta": "be"}
    assert confine.user_name_for("alpha", "spooljob", mapping) == "al"
    assert confine.user_name_for("gamma", "spooljob", mapping) == "spooljob"
    assert confine.user_name_for("gamma", "", {}) is None
    with pytest.raises(ConfigError, match="'alpha' is given twice"):
        config.load(None, {"PROJECT_USERS": "alpha:a,alpha:b", "ENV_FILE": os.devnull})
    with pytest.raises(ConfigError, match="'nouser': expected project:user"):
        config.load(None, {"PROJECT_USERS": "nouser", "ENV_FILE": os.devnull})
    with pytest.raises(ValueError, match="is uid 0"):
        confine.lookup_user("root")
    with pytest.raises(ValueError, match="does not exist .*useradd --system --no-create-home no-such-user-x"):
        confine.lookup_user("no-such-user-x")


def test_switch_problem_reads_the_capabilities(tmp_path):
    """Without CAP_SETUID/CAP_SETGID in CapEff the reason says so; with both there is none."""
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000000000\n")
    assert confine.switch_problem(str(status)).startswith("not isolated: cannot switch users: running as uid")
    status.write_text("Name:\tx\nCapEff:\t00000000000000c0\n")
    assert confine.switch_problem(str(status)) is None


def test_the_shim_side_imports_only_the_standard_library():
    """confine is imported by the shim under python -S: no third-party module, no ctypes until preload()."""
    code = ("import sys; sys.path.insert(0, 'supervisor'); before = set(sys.modules); import confine; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(out.stdout.split()) <= {"confine", "fcntl", "pwd", "resource", "_signal", "os", "stat", "_stat", "posixpath",
                                       "genericpath", "_collections_abc", "os.path"}, out.stdout
