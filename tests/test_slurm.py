"""The slurm executor: its sbatch/squeue plumbing without a cluster, then whole jobs on a real one.

The cluster tests need the single-node cluster of slurm/cluster.sh. The
`slurm_cluster` fixture starts it when it is not running (as root it installs
Slurm first if needed) and leaves it running (`.ci/run` stops it; elsewhere a
warning in pytest's summary says so, and `slurm/cluster.sh stop` stops it).
When it cannot be started the tests fail under CI (env CI set) and are skipped
with the reason elsewhere.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest

from facade_harness import Soap, devauth, make_stack, new_sid, wait_http  # noqa: F401  (devauth: fixture)
from harness import (ARTIFACTS, ROOT, Managed, Stack, free_port, kill_leftovers, processes_with_arg, wait_for, write_env)
from jobs import config
from jobs.definitions import load_definition
from jobs.errors import ConfigError, DefinitionError
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import Spool
from jobs.states import JobState
from jobs.times import read_time
from jobs.runfiles import RunFiles
from supervisor.executor import Job
from supervisor.slurm import (JOB_SCRIPT, SlurmExecutor, SlurmExit, parse_record, parse_squeue, slurm_end_note,
                              time_limit_minutes)

CLUSTER = ROOT / "slurm" / "cluster.sh"
SLURM_DIR = Path(os.environ.get("SLURM_DEV_DIR", "/var/tmp/spoolsoap-slurm"))
PROGRAMS = ROOT / "tests" / "programs"

def definition(name: str, argv: str, table: str, *lines: str) -> str:
    """A minimal job definition: service Name, namespace name.test, method startName, one more table."""
    title = name.capitalize()
    head = [f'service = "{title}"', f'namespace = "{name}.test"', f'start_method = "start{title}"',
            f"argv = {argv}", f"[{table}]"]
    return "\n".join(head + list(lines)) + "\n"


# Definitions only these tests use (%(programs)s: tests/programs).
EXTRA_DEFINITIONS = {
    # a program that outlives its one-minute limit: Slurm's TIMEOUT
    "overtime.toml": definition("overtime", '["{python}", "%(programs)s/exit_with.py", "300", "0"]', "limits",
                                "max_runtime_seconds = 60", "abort_grace_seconds = 1"),
    # ignores SIGTERM: only the KILL after the grace period ends it
    "stubborn.toml": definition("stubborn",
                                """["/bin/sh", "-c", "trap '' TERM; echo started; sleep 300 & wait; wait"]""",
                                "limits", "abort_grace_seconds = 1"),
    # grows past its memory limit a second after it starts
    "hog.toml": definition("hog",
                           """["{python}", "-c", "import time; time.sleep(1); b = b'x' * (300 << 20); time.sleep(60)"]""",
                           "limits", 'memory = "64 MiB"', "cpus = 1"),
    # held in Slurm's queue for an hour by the definition's own sbatch option
    "later.toml": definition("later", '["{python}", "%(programs)s/exit_with.py", "0", "0"]', "slurm",
                             'options = ["--begin=now+1hour"]'),
}


# -- the cluster -------------------------------------------------------------------

def cluster_ready() -> bool:
    if not shutil.which("sbatch"):
        return False
    return subprocess.run([str(CLUSTER), "status"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node Slurm cluster: started with slurm/cluster.sh if needed, left running."""
    problem = None
    if not cluster_ready():
        if os.geteuid() != 0 and not shutil.which("sbatch"):
            problem = "no Slurm here, and slurm/cluster.sh needs root to install it"
        else:
            r = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
            if r.returncode != 0 or not cluster_ready():
                problem = f"slurm/cluster.sh start failed (exit {r.returncode}):\n{r.stderr[-3000:]}"
            elif not os.environ.get("CI"):
                warnings.warn(f"the Slurm tests started a single-node Slurm cluster (slurm/cluster.sh, state in "
                              f"{SLURM_DIR}), installing Slurm if it was missing; it keeps running: "
                              "stop it with slurm/cluster.sh stop", UserWarning, stacklevel=1)
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the Slurm tests cannot run under CI: {problem}", pytrace=False)
        pytest.skip(problem)
    yield


def slurm_job(job_id: str) -> dict[str, str]:
    """Slurm's own record of a job (scontrol show job -o)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                         timeout=30).stdout
    return parse_record(out)


def slurm_jobs_named(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "all", f"--name={name}", "-o", "%i"], capture_output=True,
                         text=True, timeout=30).stdout
    return out.split()


def cancel_and_clean(spool_dir: Path, directory: Path) -> None:
    """Teardown: cancel this test's Slurm jobs, then kill anything left under its directory."""
    ids = []
    runs = spool_dir / "runs"
    for state in runs.glob("*/state.json") if runs.is_dir() else []:
        try:
            st = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if st.get("executor_id") and st.get("state") not in ("SUCCEEDED", "FAILED", "ABORTED"):
            ids.append(st["executor_id"])
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
    kill_leftovers(directory)


class SlurmStack(Stack):
    """A Stack with EXECUTOR=slurm against the development cluster."""

    def __init__(self, tmp: Path, **env):
        extra = {name: text % {"programs": PROGRAMS} for name, text in EXTRA_DEFINITIONS.items()}
        values = dict(EXECUTOR="slurm", SLURM_POLL_SECONDS="0.5", SLURM_JOBCOMP_LOG=SLURM_DIR / "jobcomp.log")
        values.update(env)
        super().__init__(tmp, extra_definitions=extra, **values)

    def wait_slurm_running(self, sid: str, timeout: float = 30) -> dict:
        """Until Slurm runs the job (the supervisor has seen it running: reason and Slurm's start time)."""
        wait_for(lambda: self.state(sid).get("reason", "").startswith("running in Slurm"), timeout,
                 what=f"{sid} running in Slurm")
        return self.state(sid)


@pytest.fixture
def slurm_stack(tmp_path, slurm_cluster):
    s = SlurmStack(tmp_path)
    yield s
    s.stop()
    cancel_and_clean(s.cfg.spool_dir, tmp_path)


# -- without a cluster: the plumbing ---------------------------------------------------

class FakeSlurm:
    """Records every Slurm command; answers from a table of canned results."""

    def __init__(self, answers: dict[str, tuple[int, str, str]] | None = None):
        self.calls: list[tuple[list[str], dict | None]] = []
        self.answers = answers or {}

    def __call__(self, argv, env=None, **kwargs):
        self.calls.append((list(argv), env))
        code, out, err = self.answers.get(Path(argv[0]).name, (0, "", ""))
        return subprocess.CompletedProcess(argv, code, out, err)

    def named(self, name: str) -> list[list[str]]:
        return [argv for argv, _ in self.calls if Path(argv[0]).name == name]


def make_job(tmp_path: Path, sid: str = "sid-1", job: str = "waiter", mkdirs: bool = True,
             definitions_dir: Path | None = None, **env) -> tuple[Job, config.Config]:
    env_file = write_env(tmp_path, EXECUTOR="slurm",
                         **({"DEFINITIONS_DIR": definitions_dir} if definitions_dir else {}), **env)
    cfg = config.load(env_file, {})
    from jobs.definitions import load_definitions
    defs = load_definitions(cfg.definitions_dir)
    spool = Spool(cfg.spool_dir).ensure()
    spec = JobSpec.parse(json.loads(JobSpec(sid, job, {"secondsToWait": 5}).to_json()), defs)
    rs = RunState(sid, job, executor="slurm")
    j = Job(spec, defs[job], rs, RunFiles(spool, sid))
    if mkdirs:
        j.attempt_dir.mkdir(parents=True)
    return j, cfg


def test_sbatch_gets_an_argv_with_the_runs_paths_and_the_fixed_script(tmp_path):
    """sbatch is called with an argv list: run dir, log files, serviceID, time limit, ALL exported, job.sh + shim argv."""
    job, cfg = make_job(tmp_path, SLURM_PARTITION="batch", SLURM_ACCOUNT="proj1",
                        SLURM_OPTIONS="--mem=1G --comment='two words'")
    fake = FakeSlurm({"sbatch": (0, "4242\n", "")})
    ex = SlurmExecutor(cfg, run=fake)
    argv = ["/usr/bin/prog", "a b; rm -rf /", "$(x)"]
    seen = ex.start(job, argv, {"PATH": "/usr/bin", "JOB_SERVICE_ID": "sid-1"})
    (sbatch, env), = fake.calls
    adir = job.attempt_dir
    options, script_at = sbatch[1:sbatch.index(str(JOB_SCRIPT))], sbatch.index(str(JOB_SCRIPT))
    assert "sbatch" == sbatch[0]
    assert ["--parsable", "--job-name=sid-1", f"--chdir={job.run_dir}", f"--output={adir}/stdout.log",
            f"--error={adir}/stderr.log", "--open-mode=append", "--export=ALL", "--time=1500", "--no-requeue",
            "--partition=batch", "--account=proj1", "--mem=1G", "--comment=two words"] == options
    # the shim works in the attempt's work/, cuts the logs at JOB_LOG_LIMIT (100 MiB) on the node too
    assert [sys.executable, "-S", str(ROOT / "supervisor" / "shim.py"), f"{adir}/work", f"{adir}/stdout.log",
            f"{adir}/stderr.log", f"{adir}/exit.json", f"{job.run_dir}/notifications.txt", f"log_bytes={100 << 20}",
            "--", *argv] == sbatch[script_at + 1:]
    assert {"PATH": "/usr/bin", "JOB_SERVICE_ID": "sid-1"} == env
    # reported to the daemon, which owns the state: handed over, not started (no start time yet)
    assert ("4242", None, True) == (seen.executor_id, seen.pid, seen.waiting)
    assert "submitted to Slurm as job 4242" == seen.reason
    assert ("not isolated: Slurm runs the job as its submitter, the supervisor's user, in the cgroups the cluster "
            "configures; limits: logs 100 MiB each (the shim)") == seen.isolation


def test_the_definitions_slurm_table_overrides_partition_and_adds_options(tmp_path):
    """A definition's [slurm] partition/account win over the env; its options come after SLURM_OPTIONS."""
    defs = tmp_path / "defs"
    defs.mkdir()
    text = (ROOT / "jobs" / "definitions" / "waiter.toml").read_text()
    (defs / "waiter.toml").write_text(text + '\n[slurm]\npartition = "gpu"\noptions = ["--gres=gpu:1", "-c4"]\n')
    job, cfg = make_job(tmp_path, definitions_dir=defs, SLURM_PARTITION="batch", SLURM_OPTIONS="--mem=1G")
    args = SlurmExecutor(cfg, run=FakeSlurm()).sbatch_args(job)
    assert "--partition=gpu" in args and "--partition=batch" not in args
    assert ["--mem=1G", "--gres=gpu:1", "-c4"] == args[-3:]


def test_the_jobs_limits_become_sbatch_options_before_the_sites_own(tmp_path):
    """[limits] memory and cpus become --mem (whole MiB) and --cpus-per-task (whole CPUs, rounded up);
    a definition without them takes JOB_MEMORY_LIMIT / JOB_CPU_LIMIT; processes have no sbatch option."""
    defs = tmp_path / "defs"
    defs.mkdir()
    text = (ROOT / "jobs" / "definitions" / "waiter.toml").read_text()
    (defs / "waiter.toml").write_text(text.replace("[limits]\n", '[limits]\nmemory = "100 MiB"\ncpus = 1.5\n'
                                                                 "processes = 50\n"))
    job, cfg = make_job(tmp_path, definitions_dir=defs, SLURM_OPTIONS="--qos=normal", JOB_PROCESS_LIMIT="10")
    args = SlurmExecutor(cfg, run=FakeSlurm()).sbatch_args(job)
    assert ["--mem=100M", "--cpus-per-task=2", "--qos=normal"] == args[-3:]
    (tmp_path / "env2").mkdir()
    job, cfg = make_job(tmp_path / "env2", JOB_MEMORY_LIMIT="1.5 GiB", JOB_CPU_LIMIT="0.25")
    assert ["--mem=1536M", "--cpus-per-task=1"] == SlurmExecutor(cfg, run=FakeSlurm()).sbatch_args(job)[-2:]


@pytest.mark.parametrize("env, clash", [
    ({"JOB_MEMORY_LIMIT": "2 GiB", "SLURM_OPTIONS": "--mem=1G"}, "'--mem=1G' (SLURM_OPTIONS or the definition's "
     "[slurm] options) contradicts the job's memory limit of 2 GiB ([limits] memory or JOB_MEMORY_LIMIT)"),
    ({"JOB_MEMORY_LIMIT": "2 GiB", "SLURM_OPTIONS": "--mem-per-cpu=1G"}, "'--mem-per-cpu=1G'"),
    ({"JOB_CPU_LIMIT": "2", "SLURM_OPTIONS": "-c4"}, "'-c4' (SLURM_OPTIONS or the definition's [slurm] options) "
     "contradicts the job's cpus limit of 2 ([limits] cpus or JOB_CPU_LIMIT)"),
])
def test_an_option_contradicting_a_limit_is_never_submitted(tmp_path, env, clash):
    """--mem or --cpus-per-task beside a memory or CPU limit: no sbatch, the job fails saying which option clashes."""
    job, cfg = make_job(tmp_path, **env)
    fake = FakeSlurm()
    with pytest.raises(OSError) as failed:
        SlurmExecutor(cfg, run=fake).start(job, ["/bin/true"], {})
    assert clash in str(failed.value) and [] == fake.calls


def test_without_limits_the_sites_memory_options_pass_as_before(tmp_path):
    """No memory or CPU limit anywhere: --mem and -c in the options are the site's to give."""
    job, cfg = make_job(tmp_path, SLURM_OPTIONS="--mem=1G -c2")
    assert ["--mem=1G", "-c2"] == SlurmExecutor(cfg, run=FakeSlurm()).sbatch_args(job)[-2:]


def test_a_missing_run_directory_is_never_submitted(tmp_path):
    """Without its attempt directory a job is not handed to sbatch (Slurm would run it in /tmp)."""
    job, cfg = make_job(tmp_path, mkdirs=False)
    fake = FakeSlurm()
    with pytest.raises(OSError, match="does not exist"):
        SlurmExecutor(cfg, run=fake).start(job, ["/bin/true"], {})
    assert [] == fake.calls


def test_an_sbatch_refusal_raises_with_its_message(tmp_path):
    """sbatch's own error message becomes the OSError the daemon records as the spawn failure."""
    job, cfg = make_job(tmp_path)
    fake = FakeSlurm({"sbatch": (1, "", "sbatch: error: invalid partition specified: nope\n")})
    with pytest.raises(OSError, match="sbatch failed \\(exit 1\\): sbatch: error: invalid partition specified: nope"):
        SlurmExecutor(cfg, run=fake).start(job, ["/bin/true"], {})


def test_one_squeue_call_watches_every_job(tmp_path):
    """ended() asks Slurm about all active jobs in one squeue call, not one per job."""
    jobs = []
    cfg = None
    for i in range(5):
        (tmp_path / str(i)).mkdir()
        job, cfg = make_job(tmp_path / str(i), sid=f"many-{i}")
        job.rs.move(JobState.RUNNING, "running", time.time())
        job.rs.executor_id = str(100 + i)
        jobs.append(job)
    rows = "".join(f"{100 + i}|{'RUNNING' if i % 2 else 'PENDING'}|{'None' if i % 2 else 'Resources'}|"
                   f"2030-01-01T00:00:00|{'vm' if i % 2 else ''}\n" for i in range(5))
    fake = FakeSlurm({"squeue": (0, rows, "")})
    ex = SlurmExecutor(cfg, run=fake)
    for job in jobs:
        assert ex.adopt(job)
    assert [] == ex.ended(jobs, full=True)
    assert [["squeue", "-h", "-t", "all", "-j", "100,101,102,103,104", "-o", "%i|%T|%r|%S|%N"]] == \
        [argv for argv, _ in fake.calls]
    seen = [s for _, s in ex.observe(jobs)]  # what the daemon applies to the states
    assert "pending in Slurm as job 100 (Resources)" == seen[0].reason and seen[0].started_at is None
    assert "running in Slurm as job 101 on vm" == seen[1].reason
    assert seen[1].started_at and seen[1].started_at <= time.time()  # a start time in the future is clamped
    assert [] == ex.observe(jobs)  # reported once


def running_job(tmp_path: Path, job_id: str = "77", **env) -> tuple[Job, config.Config]:
    job, cfg = make_job(tmp_path, **env)
    job.rs.move(JobState.RUNNING, "running", time.time())
    job.rs.executor_id = job_id
    return job, cfg


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_unreachable_slurm_ends_nothing(tmp_path):
    """While squeue fails no job is declared ended, except one whose shim recorded its exit."""
    job, cfg = running_job(tmp_path)
    fake = FakeSlurm({"squeue": (1, "", "squeue: error: Unable to contact slurm controller\n")})
    ex = SlurmExecutor(cfg, run=fake, clock=Clock())
    ex.adopt(job)
    assert [] == ex.ended([job], full=True)
    (job.attempt_dir / "exit.json").write_text('{"exit_code": 0, "signal": null}')
    [(ended, rec)] = ex.ended([job], full=True)
    assert (ended, rec.exit_code) == (job, 0)


def test_without_an_exit_file_the_end_comes_from_scontrol(tmp_path):
    """Slurm says FAILED and no exit.json appears within the grace: scontrol's ExitCode 3:0 is the exit code."""
    job, cfg = running_job(tmp_path)
    clock = Clock()
    fake = FakeSlurm({"squeue": (0, "77|FAILED|NonZeroExitCode|2026-01-01T00:00:00|node7\n", ""),
                      "scontrol": (0, "JobId=77 JobName=sid-1 JobState=FAILED Reason=NonZeroExitCode "
                                      "ExitCode=3:0 StdOut=/x\n", "")})
    ex = SlurmExecutor(cfg, run=fake, clock=clock)
    ex.adopt(job)
    assert [] == ex.ended([job], full=True)  # the exit file may still be on its way
    clock.now += 2.5
    [(_, rec)] = ex.ended([job], full=False)
    assert (3, None) == (rec.exit_code, rec.signal)
    assert "Slurm job 77 FAILED, NonZeroExitCode, no exit record (exit code 3)" == rec.describe()


def test_a_job_slurm_forgot_ends_from_the_completion_log(tmp_path):
    """Purged from slurmctld and no exit.json: the job-completion log gives its state (NODE_FAIL here)."""
    log = tmp_path / "jobcomp.log"
    log.write_text("JobId=76 UserId=root(0) JobState=COMPLETED ExitCode=0:0 \n"
                   "JobId=77 UserId=root(0) Name=sid-1 JobState=NODE_FAIL NodeList=n1 ExitCode=0:9 \n")
    job, cfg = running_job(tmp_path, SLURM_JOBCOMP_LOG=log)
    clock = Clock()
    fake = FakeSlurm({"squeue": (1, "", "slurm_load_jobs error: Invalid job id specified\n"),
                      "scontrol": (1, "", "slurm_load_jobs error: Invalid job id specified\n")})
    ex = SlurmExecutor(cfg, run=fake, clock=clock)
    ex.adopt(job)
    assert [] == ex.ended([job], full=True)
    clock.now += 2.5
    [(_, rec)] = ex.ended([job], full=True)
    assert (None, 9) == (rec.exit_code, rec.signal)
    assert "Slurm: the node failed (NODE_FAIL) (killed by SIGKILL)" == rec.describe()


def test_a_timeout_keeps_the_programs_end_and_says_timeout(tmp_path):
    """The shim recorded SIGTERM and Slurm says TIMEOUT: the reason is Slurm's time limit, the signal the shim's."""
    job, cfg = running_job(tmp_path)
    (job.attempt_dir / "exit.json").write_text('{"exit_code": null, "signal": 15}')
    fake = FakeSlurm({"squeue": (0, "77|TIMEOUT|TimeLimit|2026-01-01T00:00:00|vm\n", "")})
    ex = SlurmExecutor(cfg, run=fake, clock=Clock())
    ex.adopt(job)
    [(_, rec)] = ex.ended([job], full=False)
    assert (None, 15) == (rec.exit_code, rec.signal)
    assert "timeout: Slurm time limit of 1500 min (killed by SIGTERM)" == rec.describe()


def test_parsers_read_squeue_scontrol_and_jobcomp_lines():
    """The squeue format, a `scontrol show job -o` line and a jobcomp/filetxt line parse into the fields used."""
    rows = parse_squeue("12|TIMEOUT|TimeLimit|2026-11-23T15:32:13|vm\n13|PENDING|Resources|N/A|\n")
    assert ("TIMEOUT", "TimeLimit", "vm") == (rows["12"].state, rows["12"].reason, rows["12"].nodes)
    assert ("PENDING", "") == (rows["13"].state, rows["13"].nodes)
    scontrol = ("JobId=3 JobName=tt UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
                "ExitCode=143:0 RunTime=00:01:01 Command=/x/job.sh /py -S shim.py /a b/1 -- prog WorkDir=/a b "
                "StdErr=/a b/1/stderr.log StdIn=/dev/null StdOut=/a b/1/stdout.log Power=")
    assert {"JobId": "3", "JobState": "TIMEOUT", "Reason": "TimeLimit", "ExitCode": "143:0",
            "StdOut": "/a b/1/stdout.log"} == parse_record(scontrol)
    jobcomp = ("JobId=5 UserId=root(0) GroupId=root(0) Name=tk2 JobState=FAILED Partition=debug TimeLimit=5 "
               "NodeList=vm NodeCnt=1 DerivedExitCode=0:0 ExitCode=0:9 ")
    assert {"JobId": "5", "JobState": "FAILED", "ExitCode": "0:9", "NodeList": "vm"} == parse_record(jobcomp)


def test_reasons_say_what_slurm_did():
    """TIMEOUT reads as a timeout, NODE_FAIL and OOM are named, and the program's own end follows in brackets."""
    assert "timeout: Slurm time limit of 1 min" == slurm_end_note("TIMEOUT", "TimeLimit", 1)
    assert "Slurm: the node failed (NODE_FAIL)" == slurm_end_note("NODE_FAIL", "None", 5)
    assert slurm_end_note("FAILED", "NonZeroExitCode", 5) is None
    assert "timeout: Slurm time limit of 1 min (exit code 143)" == \
        SlurmExit(143, None, slurm="timeout: Slurm time limit of 1 min").describe()
    assert "Slurm: the node failed (NODE_FAIL)" == SlurmExit(None, None, slurm=slurm_end_note("NODE_FAIL", "", 1)).describe()
    assert "x (killed by SIGTERM)" == SlurmExit(None, 15, slurm="x").describe()
    assert (1, 1, 2, 1500) == tuple(time_limit_minutes(s) for s in (0.5, 60, 61, 90000))
    oom = "out of memory: used more than its 100 MiB limit in Slurm"
    assert oom == slurm_end_note("OUT_OF_MEMORY", "OutOfMemory", 5, 100 << 20)
    assert oom == slurm_end_note("FAILED", "JobLaunchFailure", 5, 100 << 20, over_memory=True)
    assert "out of memory: used more than its limit in Slurm" == slurm_end_note("OUT_OF_MEMORY", "", 5)


@pytest.mark.parametrize("key, value, message", [
    ("SLURM_OPTIONS", "--time=5", "--time is set by the supervisor"),
    ("SLURM_OPTIONS", "--mem 4G", "each option must be one argument"),
    ("SLURM_OPTIONS", "-Jname", "-J is set by the supervisor"),
    ("SLURM_OPTIONS", "--comment='unbalanced", "cannot split"),
    ("SLURM_PARTITION", "a b", "SLURM_PARTITION='a b'"),
    ("SLURM_POLL_SECONDS", "0", "must be in [0.2, 600]"),
])
def test_bad_slurm_settings_are_named(tmp_path, key, value, message):
    """A bad SLURM_* value stops start-up with the key and what is allowed."""
    with pytest.raises(ConfigError, match=None) as e:
        config.load(write_env(tmp_path, **{key: value}), {})
    assert message in str(e.value)


def test_bad_slurm_table_names_file_and_field(tmp_path):
    """A definition's [slurm] table is checked like the rest: file: field: problem."""
    text = (ROOT / "jobs" / "definitions" / "waiter.toml").read_text()
    bad = tmp_path / "waiter.toml"
    bad.write_text(text + '\n[slurm]\noptions = ["--output=/tmp/x"]\n')
    with pytest.raises(DefinitionError, match=f"{bad}: slurm.options: '--output=/tmp/x': --output is set by"):
        load_definition(bad)
    bad.write_text(text + '\n[slurm]\nqueue = "x"\n')
    with pytest.raises(DefinitionError, match=f"{bad}: slurm.queue: unknown field"):
        load_definition(bad)


def test_slurm_as_default_executor_needs_its_commands(tmp_path):
    """EXECUTOR=slurm without sbatch on SLURM_BIN_DIR stops the daemon with a clear message."""
    env = write_env(tmp_path, EXECUTOR="slurm", SLURM_BIN_DIR=tmp_path / "nowhere")
    proc = subprocess.run([sys.executable, "-m", "supervisor.daemon"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "ENV_FILE": str(env)}, timeout=30)
    assert 2 == proc.returncode
    assert "EXECUTOR=slurm: sbatch, squeue, scontrol, scancel not found on SLURM_BIN_DIR=" in proc.stderr


# -- on the cluster: supervisor and spool ----------------------------------------------

def test_jobs_survive_a_supervisor_kill_and_are_adopted_by_slurm_id(slurm_stack):
    """kill -9 of the daemon while Slurm runs (and queues) its jobs: a restart adopts them by job id, none runs twice."""
    s = slurm_stack
    long, fail, queued = new_sid("k9-long"), new_sid("k9-fail"), new_sid("k9-queued")
    s.start()
    s.submit(long, secondsToWait=6)
    s.submit(fail, "exit_with", seconds=2, code=3)
    s.submit(queued, secondsToWait=1)  # on 2 CPUs it waits in Slurm's queue
    for sid in (long, fail):
        s.wait_slurm_running(sid)
    wait_for(lambda: s.state(queued).get("executor_id"), 10, what="queued job submitted")
    ids = {sid: s.state(sid)["executor_id"] for sid in (long, fail, queued)}
    s.daemon.stop(signal.SIGKILL)
    time.sleep(2.5)  # the failing job ends while no daemon runs
    assert "RUNNING" == s.state(fail)["state"]
    s.start()
    failed = s.wait_state(fail, "FAILED")
    assert (3, "exit code 3") == (failed["exit_code"], failed["reason"])
    still = s.state(long)
    assert ("RUNNING", ids[long]) == (still["state"], still["executor_id"])
    assert 0 == s.wait_state(queued, "SUCCEEDED")["exit_code"]
    done = s.wait_state(long, "SUCCEEDED")
    assert (1, ids[long]) == (done["attempt"], done["executor_id"])
    for sid, job_id in ids.items():
        assert [job_id] == slurm_jobs_named(sid)  # adopted, never submitted twice
    events = [json.loads(line) for line in s.daemon.output().splitlines() if line.startswith("{")]
    assert {long, fail, queued} == {e.get("service_id") for e in events if e["event"] == "job_adopted"}


def test_crash_after_sbatch_before_recording_the_id_adopts_the_slurm_job(slurm_stack):
    """RUNNING without a Slurm job id (crash right after sbatch): the job is found by name and output file, not rerun."""
    s = slurm_stack
    sid = new_sid("window")
    s.start()
    s.submit(sid, secondsToWait=4)
    job_id = s.wait_slurm_running(sid)["executor_id"]
    s.daemon.stop(signal.SIGKILL)
    state_file = s.spool.run_dir(sid) / "state.json"
    st = json.loads(state_file.read_text())
    st.update(executor_id=None, started_at=None, reason="running")
    state_file.write_text(json.dumps(st))
    s.start()
    done = s.wait_state(sid, "SUCCEEDED")
    assert (1, job_id) == (done["attempt"], done["executor_id"])
    assert [job_id] == slurm_jobs_named(sid)


def test_crash_before_sbatch_requeues_and_runs_once(slurm_stack):
    """RUNNING without a Slurm job id and no Slurm job of that name (crash before sbatch): it runs, once."""
    s = slurm_stack
    sid = new_sid("never")
    s.submit(sid, secondsToWait=0)
    spec_done = s.spool.incoming_path(sid)
    s.start()
    s.wait_state(sid, "SUCCEEDED")
    first = s.state(sid)["executor_id"]
    s.daemon.stop()
    # Pretend attempt 2 was being started when the daemon died: RUNNING, no id, nothing in Slurm.
    state_file = s.spool.run_dir(sid) / "state.json"
    st = json.loads(state_file.read_text())
    st.update(state="RUNNING", attempt=2, executor_id=None, started_at=None, finished_at=None, exit_code=None)
    state_file.write_text(json.dumps(st))
    assert not spec_done.exists()
    s.start()
    done = s.wait_state(sid, "SUCCEEDED")
    assert 2 == done["attempt"] and done["executor_id"] not in (None, first)
    assert sorted([first, done["executor_id"]], key=int) == slurm_jobs_named(sid)
    assert "requeued: the supervisor stopped before the program started" in s.daemon.output()


def test_slurm_time_limit_fails_the_job_even_without_the_supervisor(slurm_stack):
    """--time comes from max_runtime (60 s -> 1 min); Slurm enforces it with the daemon down, and the job FAILS "timeout"."""
    s = slurm_stack
    sid = new_sid("limit")
    s.start()
    s.submit(sid, "overtime")
    job_id = s.wait_slurm_running(sid)["executor_id"]
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    assert "TimeLimit=00:01:00" in out
    s.daemon.stop(signal.SIGTERM)  # the daemon's own timer must not be the one that ends it
    wait_for(lambda: slurm_job(job_id).get("JobState") == "TIMEOUT", 120, interval=1, what="Slurm TIMEOUT")
    s.start()
    st = s.wait_state(sid, "FAILED")
    assert st["reason"] == "timeout: Slurm time limit of 1 min (killed by SIGTERM)"
    assert "DUE TO TIME LIMIT" in (s.attempt_dir(sid) / "stderr.log").read_text()


def test_a_memory_limit_reaches_slurm_and_a_job_over_it_fails_out_of_memory(slurm_stack):
    """[limits] memory = "64 MiB" and cpus = 1 are the Slurm job's own (scontrol show job); the job growing past
    its memory is killed on the node and ends FAILED "out of memory", while a neighbouring job finishes normally."""
    s = slurm_stack
    hog, neighbour = new_sid("hog"), new_sid("beside")
    s.start()
    s.submit(hog, "hog")
    s.submit(neighbour, secondsToWait=3)
    job_id = s.wait_slurm_running(hog)["executor_id"]
    record = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout.split()
    assert {"MinMemoryNode=64M", "NumCPUs=1", "CPUs/Task=1"} <= set(record), record
    failed = s.wait_state(hog, "FAILED")
    assert failed["reason"].startswith("out of memory: used more than its 64 MiB limit in Slurm"), failed["reason"]
    assert failed["isolation"].startswith("not isolated: Slurm runs the job as its submitter")
    assert "limits: memory 64 MiB (--mem), cpus 1 (--cpus-per-task)" in failed["isolation"]
    assert 0 == s.wait_state(neighbour, "SUCCEEDED")["exit_code"]
    assert s.daemon.alive()


def test_ten_jobs_on_two_cpus_queue_in_slurm_and_all_finish(tmp_path, slurm_cluster):
    """With MAX_PARALLEL_JOBS above the cluster's size, Slurm queues the rest (reason shown) and runs 2 at a time."""
    s = SlurmStack(tmp_path, MAX_PARALLEL_JOBS="16")
    cpus = int(subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    try:
        s.start()
        sids = [new_sid(f"ten{i}") for i in range(10)]
        for sid in sids:
            s.submit(sid, secondsToWait=2)
        pending_seen = set()

        def all_done():
            for sid in sids:
                if s.state(sid).get("reason", "").startswith("pending in Slurm"):
                    pending_seen.add(sid)
            return all(s.state(sid).get("state") == "SUCCEEDED" for sid in sids)
        wait_for(all_done, 90, interval=0.1, what="ten jobs done")
        assert len(pending_seen) >= 10 - cpus
        spans = [json.loads((s.attempt_dir(sid) / "exit.json").read_text()) for sid in sids]
        spans = [(read_time(e["started_at"]), read_time(e["ended_at"])) for e in spans]
        for start, _ in spans:  # never more at once than the cluster has CPUs
            assert sum(1 for a, b in spans if a <= start < b) <= cpus
        assert len({s.state(sid)["executor_id"] for sid in sids}) == 10
    finally:
        s.stop()
        cancel_and_clean(s.cfg.spool_dir, tmp_path)


def test_restart_cancels_and_resubmits_as_a_new_attempt(slurm_stack):
    """restart cancels the Slurm job and submits attempt 2 as a new Slurm job; attempt 1's logs stay."""
    s = slurm_stack
    sid = new_sid("re")
    s.start()
    s.submit(sid, secondsToWait=30)
    first = s.wait_slurm_running(sid)["executor_id"]
    log = s.attempt_dir(sid) / "stdout.log"  # the shim on the node opens it a moment after Slurm says RUNNING
    wait_for(lambda: log.exists() and "waiting 30 s" in log.read_text(), 10, what="output")
    s.spool.send_command(sid, "restart", origin="operator")
    wait_for(lambda: s.state(sid).get("attempt") == 2 and s.state(sid)["reason"].startswith("running in Slurm"),
             20, what="attempt 2 running")
    second = s.state(sid)["executor_id"]
    assert second != first
    assert slurm_job(first)["JobState"] in ("COMPLETED", "FAILED", "CANCELLED")
    assert "aborted after" in (Path(RunFiles(s.spool, sid).attempt(1).work) / "result.txt").read_text()
    assert "restarted by operator" in s.state(sid)["history"][0]["reason"]
    s.spool.send_command(sid, "kill", origin="operator")
    assert "aborted by operator" == s.wait_state(sid, "ABORTED")["reason"]


def test_a_job_ignoring_term_is_killed_after_the_grace_period(slurm_stack):
    """kill: TERM first; a program that ignores it is KILLed after abort_grace_seconds (Slurm's KillWait later)."""
    s = slurm_stack
    sid = new_sid("stubborn")
    s.start()
    s.submit(sid, "stubborn")
    s.wait_slurm_running(sid)
    log = s.attempt_dir(sid) / "stdout.log"  # the shim on the node opens it a moment after Slurm says RUNNING
    wait_for(lambda: log.exists() and "started" in log.read_text(), 10, what="program output")
    s.spool.send_command(sid, "kill", origin="operator")
    time.sleep(0.8)
    assert "STOPPING" == s.state(sid)["state"]  # TERM alone did not end it
    done = s.wait_state(sid, "ABORTED", timeout=30)
    assert "aborted by operator" == done["reason"]
    assert done["signal"] == signal.SIGKILL and "killed by SIGKILL" in done["history"][0]["reason"]
    assert [] == [p for p in processes_with_arg(str(s.attempt_dir(sid))) if p.status() != psutil.STATUS_ZOMBIE]


def test_a_job_pending_in_slurm_shows_why_and_can_be_killed(slurm_stack):
    """A job Slurm holds shows "pending in Slurm (BeginTime)" without a start time; a kill cancels it: ABORTED."""
    s = slurm_stack
    sid = new_sid("later")
    s.start()
    s.submit(sid, "later")
    wait_for(lambda: "BeginTime" in s.state(sid).get("reason", ""), 15, what="pending reason")
    st = s.state(sid)
    assert ("RUNNING", None) == (st["state"], st["started_at"])
    assert f"pending in Slurm as job {st['executor_id']} (BeginTime)" == st["reason"]
    s.spool.send_command(sid, "kill", origin="operator")
    done = s.wait_state(sid, "ABORTED", timeout=15)
    assert ("aborted by operator", None) == (done["reason"], done["history"][0]["started_at"])
    assert "CANCELLED" == slurm_job(st["executor_id"])["JobState"]


def test_sbatch_refusal_fails_the_job_with_sbatchs_reason(tmp_path, slurm_cluster):
    """A partition the cluster does not have: the job FAILS at once with sbatch's message, the daemon carries on."""
    s = SlurmStack(tmp_path, SLURM_PARTITION="nosuchpartition")
    try:
        s.start()
        s.submit("nopart-1", secondsToWait=0)
        st = s.wait_state("nopart-1", "FAILED")
        assert st["reason"].startswith("spawn failed: sbatch failed (exit 1): ")
        assert "invalid partition" in st["reason"].lower()
        assert s.daemon.alive()
    finally:
        s.stop()
        cancel_and_clean(s.cfg.spool_dir, tmp_path)


def test_spool_to_running_latency_on_slurm(slurm_stack):
    """The benchmark's Slurm piece: a spec dropped in the spool runs on the node within seconds."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.slurm_latency import measure_spool_to_running
    slurm_stack.start()
    result = measure_spool_to_running(slurm_stack.cfg.spool_dir, samples=3)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "slurm-latency.json").write_text(json.dumps(result, indent=1))
    print("spool->running on Slurm:", {k: round(v["median"], 3) for k, v in result.items() if k != "samples"})
    assert result["submitted"]["median"] < 2.0
    assert result["running"]["median"] < 5.0


# -- on the cluster: through SOAP ---------------------------------------------------

@pytest.fixture(scope="module")
def slurm_facade(tmp_path_factory, slurm_cluster, devauth):  # noqa: F811
    """devauth + supervisor (EXECUTOR=slurm) + façade, shared by this module's SOAP tests."""
    directory = tmp_path_factory.mktemp("slurm-facade")
    s = make_stack(directory, devauth, EXECUTOR="slurm", SLURM_POLL_SECONDS="0.5", MAX_PARALLEL_JOBS="8",
                   SLURM_JOBCOMP_LOG=str(SLURM_DIR / "jobcomp.log"))
    yield s
    s.stop()
    cancel_and_clean(s.config.spool_dir, directory)


def page(status_base64: str) -> str:
    return base64.b64decode(status_base64, validate=True).decode("utf-8")


def status_of(reply) -> str:
    return reply if isinstance(reply, str) else reply.status_base64


def test_waiter_lifecycle_through_soap_on_slurm(slurm_facade):
    """startWaiter -> polls -> COMPLETED/FINISHED, the job having run as a Slurm job named by the serviceID."""
    st, token = slurm_facade, slurm_facade.token()
    soap = Soap(st.wsdl)
    sid = new_sid("slurm")
    reply = soap.call("zeep", "startWaiter", sid, token, st.extra(), 2)
    assert "UNSET" == reply.result
    answers = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answers.append(soap.call("suds", "getServiceStatus", sid, token))
        if answers[-1].status_base64 == "COMPLETED":
            break
        time.sleep(0.2)
    assert ("COMPLETED", "FINISHED") == (answers[-1].status_base64, answers[-1].result)
    assert any("Running" in page(a.status_base64) for a in answers[:-1] if a.status_base64 != "UNCHANGED")
    state = st.state(sid)
    assert ("slurm", None) == (state["executor"], state["pid"])
    # the job's exit record is ours to read at once; Slurm says COMPLETED once its own bookkeeping is done
    record = wait_for(lambda: (r := slurm_job(state["executor_id"])).get("JobState") not in ("RUNNING", "COMPLETING")
                      and r, 15, what="Slurm's record of the job's end")
    assert ("COMPLETED", "0:0") == (record["JobState"], record["ExitCode"])
    assert str(st.attempt_file(sid, "stdout.log")) == record["StdOut"]
    out = subprocess.run(["scontrol", "show", "job", "-o", state["executor_id"]], capture_output=True, text=True).stdout
    assert f"JobName={sid} " in out and f"WorkDir={st.spool / 'runs' / sid} " in out


def test_abort_through_soap_cancels_the_slurm_job_and_its_process_tree(slurm_facade):
    """abortService on a Slurm job whose grandchild ignores SIGTERM answers true; the whole tree is gone."""
    st, token = slurm_facade, slurm_facade.token()
    tree = Soap(st.url("Tree") + "?wsdl")
    sid = new_sid("slurm-tree")
    tree.call("zeep", "startTree", sid, token, st.extra())
    pids_file = st.attempt_file(sid, "pids.txt")
    pids = [int(p) for p in wait_for(lambda: pids_file.exists() and pids_file.read_text().split(), 20,
                                     what="tree pids")]
    procs = [psutil.Process(p) for p in pids]
    assert tree.call("suds", "abortService", sid, token) is True
    state = st.state(sid)
    assert "ABORTED" == state["state"] and state["reason"].startswith("aborted by")
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert [] == [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    wait_for(lambda: slurm_job(state["executor_id"]).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 15,
             what="Slurm job ended")
    assert "The job was aborted" in page(status_of(tree.call("zeep", "getServiceStatus", sid, token)))


def test_exit_code_3_on_slurm_fails_with_the_code_shown(slurm_facade):
    """A program exiting 3 in Slurm ends FAILED "exit code 3": the page shows the code, then polls fault with it."""
    st, token = slurm_facade, slurm_facade.token()
    exit_with = Soap(st.url("ExitWith") + "?wsdl")
    sid = new_sid("slurm-fail")
    exit_with.call("zeep", "startExitWith", sid, token, st.extra(), 0, 3)
    state = st.wait_state(sid, {"FAILED"})
    assert (3, "exit code 3") == (state["exit_code"], state["reason"])
    failure = page(status_of(exit_with.call("zeep", "getServiceStatus", sid, token)))
    assert "The job failed" in failure and "<dt>Exit code</dt><dd>3</dd>" in failure
    assert "exiting with 3" in failure
    f = exit_with.fault("suds", "getServiceStatus", sid, token)
    assert "JobFailed" in f.code and "exit code 3" in f.message
    assert "FAILED" == slurm_job(state["executor_id"])["JobState"]


def test_two_facades_on_one_spool_serve_the_same_jobs(slurm_facade):
    """A second façade (its own granian, same env file and spool) sees, polls and aborts jobs the first one started."""
    st, token = slurm_facade, slurm_facade.token()
    port = free_port()
    # its abortService waits up to 20 s (not 4) for the kill to be applied: scancel is slow on a loaded host
    second = Managed([sys.executable, "-m", "facade"], st.directory / "facade-2.log",
                     {"ENV_FILE": str(st.env_file), "FACADE_PORT": str(port), "ABORT_WAIT_SECONDS": "20"})
    st.extras.append(second)
    wsdl_b = f"http://127.0.0.1:{port}{st.config.context_root}/Waiter?wsdl"
    wait_http(wsdl_b, second, what="second façade")
    a, b = Soap(st.wsdl), Soap(wsdl_b)

    done = new_sid("two-done")
    a.call("zeep", "startWaiter", done, token, st.extra(), 1)
    retried = b.call("suds", "startWaiter", done, token, st.extra(), 1)  # a WFM retry, through the other façade
    assert "UNSET" == retried.result
    wait_for(lambda: b.call("zeep", "getServiceStatus", done, token).status_base64 == "COMPLETED", 30,
             interval=0.2, what="COMPLETED through façade B")
    assert ("COMPLETED", "FINISHED") == (lambda r: (r.status_base64, r.result))(
        a.call("suds", "getServiceStatus", done, token))
    assert [st.state(done)["executor_id"]] == slurm_jobs_named(done)  # one Slurm job, not one per façade

    running = new_sid("two-abort")
    a.call("suds", "startWaiter", running, token, st.extra(), 30)
    st.wait_state(running, {"RUNNING"})
    shown = page(status_of(b.call("zeep", "getServiceStatus", running, token)))
    assert running in shown
    assert b.call("zeep", "abortService", running, token) is True
    assert "ABORTED" == st.state(running)["state"]
    assert "The job was aborted" in page(status_of(a.call("suds", "getServiceStatus", running, token)))
