"""Jobs confined for real (issue 18) and their usage recorded (issue 19): the real supervisor, real programs, as root.

A hostile program tries every way out of its job; hogs meet their limits;
the attempt's usage survives a supervisor killed with kill -9. Where this
machine cannot confine (JOB_ISOLATION=off, no JOB_USER), the supervisor says
so plainly in its log, supervisor.json, /readyz and each job's record.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest

from jobs.metrics import Health
from jobs.spec import JobSpec
from supervisor import cgroups, confine, runner
from supervisor.isolation import cgroup_parent, remove_spool_cgroups, spool_cgroup
from tests.harness import ROOT, Stack, kill_leftovers, wait_for

PROGRAMS = ROOT / "tests" / "programs"
USERS = ("spooljob-test", "spooljob-test2")


def _python() -> str:
    """An interpreter another user may run (the tests' own may sit below /root, mode 0700)."""
    return shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or ""


def definition(name: str, argv: list[str], limits: str = "", files: str = "", outputs: str = "") -> str:
    return (f'service = "{name.capitalize()}"\nnamespace = "{name}.test"\nstart_method = "start{name.capitalize()}"\n'
            f"argv = {json.dumps(argv)}\n[inputs.victim]\ntype = \"string\"\ndefault = \"-\"\n"
            "[inputs.secret]\ntype = \"string\"\ndefault = \"-\"\n"
            "[inputs.pids]\ntype = \"string\"\ndefault = \"0 0\"\n"
            "[inputs.arg]\ntype = \"integer\"\ndefault = 0\nmin = 0\nmax = 1000000000\n"
            f"[files]\n{files}\n[limits]\nmax_runtime_seconds = 120\nabort_grace_seconds = 1\n{limits}\n{outputs}")


def definitions(py: str) -> dict[str, str]:
    hungry = [py, str(PROGRAMS / "hungry.py")]
    return {
        "hostile.toml": definition("hostile", [py, str(PROGRAMS / "hostile.py"), "{input.victim}", "{input.secret}",
                                               "{input.pids}"],
                                   files='report = "report.txt"\nsurvivor = "survivor.txt"'),
        "victim.toml": definition("victim", [py, str(PROGRAMS / "victim.py"), "{file.result}", "{file.pid}",
                                             "{file.notifications}"],
                                  files='result = "result.txt"\npid = "pid.txt"',
                                  outputs='[outputs.result]\nfile = "result"'),
        "hog.toml": definition("hog", [*hungry, "hog", "{input.arg}"], 'memory = "100 MiB"'),
        "bomb.toml": definition("bomb", [*hungry, "forks", "{input.arg}"], "processes = 20",
                                files='forks = "forks.txt"'),
        "spew.toml": definition("spew", [*hungry, "spew", "{input.arg}"], 'log_bytes = "64 KiB"'),
        "burn.toml": definition("burn", [*hungry, "burn", "{input.arg}"]),
        "big.toml": definition("big", ["/bin/sh", "-c", "head -c 1000 /dev/zero > out.txt"],
                               files='out = "out.txt"', outputs='[outputs.out]\nfile = "out"\nmax_bytes = 100'),
    }


@pytest.fixture(scope="module")
def users() -> list[confine.JobUser]:
    problem = confine.switch_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    found = []
    for name in USERS:
        try:
            found.append(confine.lookup_user(name))
        except ValueError:
            subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
            found.append(confine.lookup_user(name))
    return found


@pytest.fixture
def place():
    """A directory other users may walk (pytest's own is 0700: it would hide the spool by itself)."""
    d = Path(tempfile.mkdtemp(prefix="spoolsoap-confine-"))
    d.chmod(0o755)
    yield d
    kill_leftovers(d)
    cgroups.remove_trees({_parent(d)})  # the stacks' CGROUP_PARENT, their spool's cgroups with it
    shutil.rmtree(d, ignore_errors=True)


def _parent(place: Path) -> str:
    """The CGROUP_PARENT of the stacks made in `place`: one of each test's own."""
    return f"spoolsoap-test-{place.name}"


def make_stack(place: Path, **env) -> Stack:
    py = _python()
    if not py:
        pytest.skip("no system python3 that another user may run")
    parent = _parent(place)
    stack = Stack(place, definitions(py), CGROUP_PARENT=parent, **env)
    stack.cgroup_parent = parent
    return stack


@pytest.fixture
def confined(place, users):
    """A stack whose jobs run as spooljob-test, the project "victims" as spooljob-test2."""
    stack = make_stack(place, JOB_USER=users[0].name, PROJECT_USERS=f"victims:{users[1].name}",
                       MAX_PARALLEL_JOBS=4)
    yield stack
    stack.stop()


def submit(stack: Stack, sid: str, job: str, project: str = "alpha", **inputs) -> None:
    spec = JobSpec(sid, job, inputs, owner={"username": "u", "project": project})
    assert stack.spool.submit(spec.to_json(), sid)


def work(stack: Stack, sid: str, attempt: int = 1) -> Path:
    return stack.attempt_dir(sid, attempt) / "work"


def test_a_hostile_job_escapes_nowhere_and_every_record_stays_right(confined, place):
    """Another project's result, incoming/, commands/, the records, a secret, signals, setsid: every attempt fails."""
    secret = place / "secret"
    secret.write_text("the console's key\n")
    secret.chmod(0o600)
    confined.start()
    submit(confined, "victim-1", "victim", project="victims")
    pid_file = work(confined, "victim-1") / "pid.txt"
    wait_for(pid_file.exists, 15, what="victim started")
    victim_pid = int(pid_file.read_text())
    submit(confined, "hostile-1", "hostile", victim="victim-1", secret=str(secret),
           pids=f"{confined.daemon.pid} {victim_pid}")
    report = work(confined, "hostile-1") / "report.txt"
    wait_for(report.exists, 20, what="hostile report")
    lines = report.read_text().splitlines()
    assert lines[-1] == "done" and len(lines) == 16
    refused = [line for line in lines[:-1] if ": blocked (PermissionError: " in line]
    assert lines[:-1] == refused + ["write the notifications it was given: blocked (OSError: Bad file descriptor)"], \
        (confined.state("victim-1"), (confined.attempt_dir("victim-1") / "stderr.log").read_text())
    survivor = int((work(confined, "hostile-1") / "survivor.txt").read_text())
    hostile = confined.state("hostile-1")
    assert hostile["isolation"].startswith(f"isolated: runs as {USERS[0]}")

    confined.spool.send_command("hostile-1", "kill", origin="test")
    aborted = confined.wait_state("hostile-1", "ABORTED", timeout=15)
    assert aborted["reason"] == "aborted by test"
    wait_for(lambda: not psutil.pid_exists(survivor) or psutil.Process(survivor).status() == psutil.STATUS_ZOMBIE,
             5, what="the setsid grandchild gone with its cgroup")

    confined.spool.append_notification("victim-1", "stop")
    done = confined.wait_state("victim-1", "SUCCEEDED", timeout=15)
    assert (work(confined, "victim-1") / "result.txt").read_text() == "mine"
    assert done["isolation"].startswith(f"isolated: runs as {USERS[1]}")
    assert confined.daemon.alive()
    assert [] == list(confined.spool.incoming.iterdir()) == list(confined.spool.commands.iterdir())
    assert [] == list(confined.spool.rejected.iterdir())
    assert sorted(p.name for p in confined.spool.runs.iterdir()) == ["hostile-1", "victim-1"]
    assert aborted["history"][-1]["reason"] == "aborted by test (killed by SIGTERM)"
    assert confined.spool.root.stat().st_mode & 0o007 == 0  # the spool is the supervisor's


def test_a_memory_hog_fails_out_of_memory_while_its_neighbour_finishes(confined):
    """Over its 100 MiB limit a job ends FAILED 'out of memory'; the job beside it is untouched."""
    confined.start()
    submit(confined, "hog-1", "hog", arg=400)
    submit(confined, "calm-1", "burn", arg=0)
    failed = confined.wait_state("hog-1", "FAILED", timeout=30)
    assert failed["reason"].startswith("out of memory: used more than its 100 MiB limit")
    assert failed["usage"]["oom_kills"] >= 1
    assert confined.wait_state("calm-1", "SUCCEEDED", timeout=30)["exit_code"] == 0
    assert confined.daemon.alive()


def test_a_fork_bomb_stops_at_its_process_limit(confined):
    """processes = 20: the 200 forks it tries end at the limit, and none of its children outlives the job."""
    confined.start()
    submit(confined, "bomb-1", "bomb", arg=200)
    done = confined.wait_state("bomb-1", "SUCCEEDED", "FAILED", timeout=30)
    got = int((work(confined, "bomb-1") / "forks.txt").read_text())
    assert got < 20 and done["state"] == "SUCCEEDED"
    assert "refused after" in (confined.attempt_dir("bomb-1") / "stdout.log").read_text()


def test_output_spewed_past_its_cap_is_cut_with_a_marker(confined):
    """log_bytes = 64 KiB: 10 MB of stdout leave 64 KiB and one marker line; stderr and the job are fine."""
    confined.start()
    submit(confined, "spew-1", "spew", arg=10_000_000)
    assert confined.wait_state("spew-1", "SUCCEEDED", timeout=30)["exit_code"] == 0
    log = (confined.attempt_dir("spew-1") / "stdout.log").read_bytes()
    marker = b"\n[spoolsoap: output cut at 64 KiB]\n"
    assert log.endswith(marker) and len(log) == 64 * 1024 + len(marker)
    assert (confined.attempt_dir("spew-1") / "stderr.log").read_text() == "spew: done\n"


def test_an_output_over_its_size_fails_the_job_with_the_reason(confined):
    """An output of 1000 bytes where 100 are allowed: FAILED, never a silently cut result."""
    confined.start()
    submit(confined, "big-1", "big")
    failed = confined.wait_state("big-1", "FAILED", timeout=30)
    assert failed["reason"] == ("output out too large: out.txt is 1000 bytes, more than its 100 bytes limit "
                                "(outputs.out.max_bytes)")


def test_usage_of_a_known_job_is_recorded_within_ten_percent(confined):
    """1 s of CPU and 200 MiB touched: the attempt's usage says so, from its cgroup."""
    stack = confined
    stack.start(HUNGRY_MIB="200")  # the supervisor's environment reaches its jobs
    submit(stack, "burn-1", "burn", arg=1)
    done = stack.wait_state("burn-1", "SUCCEEDED", timeout=60)
    usage = done["usage"]
    assert usage["source"] == "cgroup"
    assert 0.9 <= usage["cpu_user_s"] + usage["cpu_system_s"] <= 1.1
    assert 0.9 * (200 << 20) <= usage["memory_peak_bytes"] <= 1.1 * (200 << 20)
    assert usage["wall_s"] >= 1.0 and usage["queue_wait_s"] >= 0
    assert done["history"][-1]["usage"] == usage


@pytest.mark.parametrize("when", ["during the run", "while the job ends"])
def test_usage_survives_kill_9_of_the_supervisor(confined, when):
    """kill -9 of the supervisor while the job runs, or while it ends: the attempt's usage is still recorded."""
    confined.start()
    submit(confined, "burn-9", "burn", arg=2)
    confined.wait_state("burn-9", "RUNNING", timeout=15)
    hint = confined.attempt_dir("burn-9") / "usage.json"  # "used so far", for the status page
    wait_for(hint.exists, 10, what="the running attempt's usage hint")
    assert json.loads(hint.read_text())["source"] == "cgroup"
    confined.daemon.stop(signal.SIGKILL)
    if when == "while the job ends":
        wait_for((confined.attempt_dir("burn-9") / "exit.json").exists, 30, what="the job ended, supervisor down")
        assert confined.state("burn-9")["state"] == "RUNNING"
    confined.start()
    done = confined.wait_state("burn-9", "SUCCEEDED", timeout=60)
    usage = done["usage"]
    assert usage["source"] == "cgroup" and 1.8 <= usage["cpu_user_s"] + usage["cpu_system_s"] <= 2.2
    layout = cgroups.setup(parent=cgroup_parent(confined.cfg))
    assert cgroups.attempt_name("burn-9", 1) not in layout.leftovers()  # removed once its usage was saved


@pytest.mark.parametrize("env, why", [
    ({"JOB_ISOLATION": "off"}, "not isolated: JOB_ISOLATION=off"),
    ({"JOB_USER": ""}, "not isolated: no JOB_USER configured"),
])
def test_where_isolation_is_unavailable_the_supervisor_says_so_plainly(place, env, why):
    """Log, supervisor.json, /readyz and the job's record all say "not isolated: <why>"; the job still runs."""
    stack = make_stack(place, **env)
    try:
        stack.start()
        submit(stack, "plain-1", "spew", arg=0)
        done = stack.wait_state("plain-1", "SUCCEEDED", timeout=30)
        assert done["isolation"].startswith(why)
        assert done["isolation"].count(why.removeprefix("not isolated: ")) == 1  # each reason once
        assert json.loads(stack.spool.supervisor_file.read_text())["isolation"].startswith(why)
        status, _, body = Health(stack.spool, stack.cfg.reconcile_seconds).readyz()
        assert status == 200 and f"jobs: {why}" in body.decode()
        assert "jobs_not_isolated" in stack.daemon.output() and why in stack.daemon.output()
    finally:
        stack.stop()


def _cgroup_of(pid: int, layout: cgroups.Layout) -> set[str]:
    """The last part of pid's cgroup path in each hierarchy the layout uses."""
    text = Path(f"/proc/{pid}/cgroup").read_text()
    own = cgroups.read_own(text)
    found = set()
    for h in layout.hierarchies:
        key = 2 if h.version == 2 else next(k for k in own if k != 2 and k & h.controllers)
        found.add(own[key].rsplit("/", 1)[-1])
    return found


def test_a_spare_shims_cgroup_is_the_attempts_named_before_it_starts_and_ended_after_kill_9(confined):
    """The spare shim waits in a cgroup of its own; the job that takes it is born inside (no move on its path),
    its record names that cgroup, the shim stays out of the OOM killer's choice and the program does not;
    after kill -9 of the supervisor the new one sweeps the old spare's cgroup and ends the whole job's."""
    stack = confined
    stack.start()
    layout = cgroups.setup(parent=cgroup_parent(stack.cfg))
    wait_for(lambda: len(layout.leftovers()) == runner.SPARES, 10, what="the spares' cgroups")
    submit(stack, "victim-1", "victim")
    pid_file = work(stack, "victim-1") / "pid.txt"
    wait_for(pid_file.exists, 15, what="victim started")
    program = int(pid_file.read_text())
    state = stack.state("victim-1")
    name = state["cgroup"]
    assert name.startswith("attempt-") and f"in cgroup {name};" in state["isolation"]
    assert _cgroup_of(program, layout) == {name} == _cgroup_of(state["pid"], layout)
    ours = Path("/proc/self/oom_score_adj").read_text().strip()
    caps = next(int(line.split()[1], 16) for line in open("/proc/self/status") if line.startswith("CapEff:"))
    shim_adj = "-1000" if caps & 1 << 24 else ours  # lowering it takes CAP_SYS_RESOURCE (not in every sandbox)
    assert Path(f"/proc/{state['pid']}/oom_score_adj").read_text().strip() == shim_adj
    assert Path(f"/proc/{program}/oom_score_adj").read_text().strip() == ours
    wait_for(lambda: len(layout.leftovers()) == runner.SPARES + 1, 10, what="the next spare's cgroup")
    old_spares = set(layout.leftovers()) - {name}

    stack.daemon.stop(signal.SIGKILL)
    stack.start()
    wait_for(lambda: not old_spares & set(layout.leftovers()), 10, what="the old spares' cgroups swept")
    assert name in layout.leftovers()
    stack.spool.send_command("victim-1", "kill", origin="test")
    stack.wait_state("victim-1", "ABORTED", timeout=15)
    wait_for(lambda: name not in layout.leftovers(), 10, what="the attempt's cgroup removed")
    assert not psutil.pid_exists(program) or psutil.Process(program).status() == psutil.STATUS_ZOMBIE
    stack.stop()
    assert layout.leftovers() == []  # the spare's cgroup goes with the supervisor


def _spool_cgroups(stack: Stack) -> list[str]:
    """Every directory of the spool's own cgroup, in every mounted hierarchy."""
    with open("/proc/self/mountinfo") as f:
        mounts = cgroups.read_mounts(f.read())
    name = spool_cgroup(stack.cfg.spool_dir)
    return [os.path.join(top, name) for m in mounts for top, dirs, _ in os.walk(m.path) if name in dirs]


def test_a_given_up_spools_cgroups_go_with_the_jobs_left_in_them(place):
    """A stopping supervisor leaves a running job and its cgroup to the next supervisor of the spool. Without a
    next one (a test's or benchmark's spool, a decommissioned one) remove_spool_cgroups ends what is left and
    removes the spool's cgroups everywhere; before it, they stayed, and the tests and benchmarks of one day left
    72,000 of them on this machine, until no memory cgroup could be made."""
    stack = make_stack(place)
    stack.start()
    submit(stack, "left-1", "waiter", secondsToWait=120)
    running = stack.wait_state("left-1", "RUNNING", timeout=30)
    if not running.get("cgroup"):
        pytest.skip(f"no cgroup here: {running.get('isolation')}")
    stack.stop()  # SIGTERM: the job keeps running, its cgroup waits for the next supervisor
    left = _spool_cgroups(stack)
    program = psutil.Process(running["pid"])
    assert left and program.is_running()
    assert remove_spool_cgroups([stack.cfg.spool_dir]) == []
    assert _spool_cgroups(stack) == []
    wait_for(lambda: not program.is_running() or program.status() == psutil.STATUS_ZOMBIE, 5, what="the job ended")
    assert remove_spool_cgroups([stack.cfg.spool_dir]) == []  # nothing left: nothing to do
