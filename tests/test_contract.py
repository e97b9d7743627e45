"""The shared contract: configuration, job definitions, specs, states and atomic spool writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jobs import config
from jobs.definitions import load_definition, load_definitions
from jobs.errors import ConfigError, DefinitionError, SpecError
from jobs.runstate import RunState
from jobs.spec import JobSpec
from jobs.spool import Spool, validate_service_id
from jobs.states import TRANSITIONS, IllegalTransition, JobState, check_transition
from tests.harness import ROOT

DEFS = load_definitions(ROOT / "jobs" / "definitions")


@pytest.mark.parametrize("root", ["/demo-waiter", "/a", "/mycompany/myvm", "/x/y.z/w_1"])
def test_good_context_roots_are_accepted(root):
    """SemWES and CAxMan style context roots pass validation."""
    assert config.validate_context_root(root) == root


@pytest.mark.parametrize("root", ["demo", "/Demo-Waiter", "/" + "a" * 33, "/a/", "/a/../b", "/a b", "", "/"])
def test_bad_context_roots_are_refused(root):
    """A malformed CONTEXT_ROOT is refused with a message naming it."""
    with pytest.raises(ConfigError, match="CONTEXT_ROOT"):
        config.validate_context_root(root)


def test_environment_overrides_env_file(tmp_path):
    """Environment variables win over the env file, relative paths resolve next to the file."""
    env = tmp_path / "env"
    env.write_text("SPOOL_DIR=s\nMAX_PARALLEL_JOBS=3\n")
    cfg = config.load(env, {"MAX_PARALLEL_JOBS": "9"})
    assert cfg.max_parallel_jobs == 9 and cfg.spool_dir == tmp_path / "s"


@pytest.mark.parametrize("line,msg", [("MAX_PARALLEL_JOBS=0", r"\[1, 10000\]"), ("LOG_LEVEL=loud", "LOG_LEVEL"),
                                      ("RECONCILE_SECONDS=x", "RECONCILE_SECONDS"), ("garbage", "expected KEY=value")])
def test_bad_config_values_name_the_key_and_range(tmp_path, line, msg):
    """A bad configuration value is named with its allowed range."""
    env = tmp_path / "env"
    env.write_text(line + "\n")
    with pytest.raises(ConfigError, match=msg):
        config.load(env, {})


def test_waiter_definition_matches_the_reference():
    """The shipped waiter definition has the reference's method, input default and output."""
    w = DEFS["waiter"]
    assert (w.service, w.namespace, w.start_method) == ("Waiter", "waiter.sintef.no", "startWaiter")
    assert w.validate_inputs({}) == {"secondsToWait": 60}
    assert [o.name for o in w.outputs] == ["result"] and w.outputs[0].placeholder == "UNSET"


@pytest.mark.parametrize("value,msg", [(-1, ">= 0"), (10**9, "<= 86400"), ("ten", "integer"), (True, "integer"),
                                       (1.5, "integer")])
def test_inputs_are_checked_against_the_definition(value, msg):
    """Type and bounds errors name the input."""
    with pytest.raises(SpecError, match=f"secondsToWait: .*{msg}"):
        DEFS["waiter"].validate_inputs({"secondsToWait": value})


def test_unknown_inputs_are_refused():
    """An input the definition does not declare is an error, not silently dropped."""
    with pytest.raises(SpecError, match="bogus: not an input"):
        DEFS["waiter"].validate_inputs({"bogus": 1})


BASE = 'service = "S"\nnamespace = "n"\nstart_method = "startS"\nargv = ["{python}"]\n'


@pytest.mark.parametrize("extra,msg", [
    ('[inputs.x]\ntype = "integer"\nmin = 0\n', "inputs.x.max: numeric inputs need both"),
    ('[inputs.x]\ntype = "complex"\n', "inputs.x.type: must be one of"),
    ('[inputs.x]\ntype = "integer"\nmin = 0\nmax = 5\ndefault = 9\n', "inputs.x.default: x: must be <= 5"),
    ('[outputs.r]\nfile = "nope"\n', "outputs.r.file: must name a key of"),
    ('[limits]\nmax_runtime_seconds = -1\n', "limits.max_runtime_seconds: must be > 0"),
    ('[files]\nlog = "stdout.log"\n', "files.log: 'stdout.log' is reserved"),
    ('colour = "blue"\n', "colour: unknown field"),
])
def test_bad_definitions_name_file_and_field(tmp_path, extra, msg):
    """Each definition mistake is reported as file: field: problem."""
    path = tmp_path / "s.toml"
    path.write_text(BASE + extra)
    with pytest.raises(DefinitionError) as e:
        load_definition(path)
    assert str(e.value).startswith(str(path)) and msg in str(e.value)


def test_unknown_argv_placeholder_is_refused(tmp_path):
    """A typo in an argv placeholder stops start-up instead of running a wrong command."""
    path = tmp_path / "s.toml"
    path.write_text(BASE.replace('["{python}"]', '["{python}", "{input.missing}"]'))
    with pytest.raises(DefinitionError, match=r"argv: unknown placeholder \{input.missing\}"):
        load_definition(path)


@pytest.mark.parametrize("sid", ["../x", "a/b", ".hidden", "", "a" * 129, "x\n", "é", None, 5])
def test_bad_service_ids_are_refused(sid):
    """Only [A-Za-z0-9][A-Za-z0-9._-]{0,127} may become a directory name."""
    with pytest.raises(SpecError, match="serviceID"):
        validate_service_id(sid)


def test_spec_round_trips_and_is_validated_when_read():
    """A spec written by one side parses on the other; tampering is caught."""
    spec = JobSpec("abc-1", "waiter", {"secondsToWait": 5}, "http://h/auth?wsdl", {"username": "u", "project": "p"})
    assert JobSpec.parse_bytes(spec.to_json(), DEFS) == spec
    data = json.loads(spec.to_json())
    data["inputs"]["secondsToWait"] = "DROP TABLE"
    with pytest.raises(SpecError, match="secondsToWait"):
        JobSpec.parse(data, DEFS)
    with pytest.raises(SpecError, match="larger than"):
        JobSpec.parse_bytes(b" " * 70000, DEFS)


def test_every_transition_goes_through_the_table():
    """Allowed transitions pass; anything else raises."""
    check_transition(JobState.QUEUED, JobState.RUNNING)
    for old, allowed in TRANSITIONS.items():
        for new in JobState:
            if new not in allowed:
                with pytest.raises(IllegalTransition):
                    check_transition(old, new)
    rs = RunState("a", "waiter")
    with pytest.raises(IllegalTransition):
        rs.move(JobState.SUCCEEDED, "x", 0)


def test_state_file_round_trips():
    """state.json written by the supervisor decodes to the same record."""
    rs = RunState("a", "waiter", queued_at=1.7e9, updated_at=1.7e9)
    rs.move(JobState.RUNNING, "running", 1.7e9 + 1)
    assert RunState.from_dict(json.loads(rs.to_json())) == rs


def test_create_atomic_never_replaces(tmp_path):
    """An exclusive drop refuses a second file of the same name and leaves nothing in tmp/."""
    spool = Spool(tmp_path).ensure()
    assert spool.submit(b"one", "sid-1")
    assert not spool.submit(b"two", "sid-1")
    assert spool.incoming_path("sid-1").read_bytes() == b"one"
    assert not list(spool.tmp.iterdir())


def test_waiter_rejects_bad_arguments(tmp_path):
    """The demo program answers bad arguments with a usage message and exit code 2."""
    for args in ([], ["x", "s", "r"], ["-1", "s", "r"], ["1", str(tmp_path / "no" / "s"), "r"]):
        p = subprocess.run([sys.executable, str(ROOT / "jobs" / "programs" / "wait_a_while.py"), *args],
                           capture_output=True, text=True, cwd=tmp_path)
        assert p.returncode == 2 and "usage: wait_a_while.py SECONDS STATUS_FILE RESULT_FILE" in p.stderr


def test_waiter_echoes_notifications_and_finishes(tmp_path):
    """The waiter writes UNSET then FINISHED, 100 %, and logs notification messages."""
    notes = tmp_path / "notifications.txt"
    notes.write_text(json.dumps({"at": 0, "message": "hello <b>"}) + "\n")
    p = subprocess.run([sys.executable, str(ROOT / "jobs" / "programs" / "wait_a_while.py"), "1", "s.txt", "r.txt"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=20,
                       env={**os.environ, "JOB_NOTIFICATIONS_FILE": str(notes)})
    assert p.returncode == 0
    assert "notification: hello <b>" in p.stdout
    assert (tmp_path / "r.txt").read_text() == "FINISHED" and (tmp_path / "s.txt").read_text() == "100"


def _import_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports, every import statement counted (also under
    TYPE_CHECKING and inside functions: a circle there is still a tangle for the reader). A parent
    package's __init__, which Python runs before any of its modules, is no edge of its own."""
    import ast
    modules = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` needs mod; pkg's __init__ only if a name is not a module
                subs = [f"{base}.{a.name}" for a in node.names]
                targets = subs + ([base] if any(t not in modules for t in subs) else [])
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_project_has_no_import_circle():
    """No module of the project imports, even only for type hints, a module that imports it back."""
    graph = _import_graph(("jobs", "supervisor", "jobctl", "facade", "client", "devauth", "console"))
    assert len(graph) > 20 and "supervisor.executor" in graph["supervisor.daemon"]  # the scan sees the tree
    assert [] == _circles(graph)


def test_peers_on_the_spool_import_only_jobs():
    """The façade, the supervisor, jobctl and the console share the spool through jobs/ alone."""
    peers = ("facade", "supervisor", "jobctl", "console")
    graph = _import_graph(("jobs",) + peers)
    assert "jobs.spool" in graph["console.app"] or any(m.startswith("jobs.") for m in graph["console.app"])
    crossing = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                      if m.split(".")[0] in peers and t.split(".")[0] in peers and t.split(".")[0] != m.split(".")[0])
    assert [] == crossing


def test_only_runfiles_spells_the_run_layout():
    """Where a run's files live is spelled in jobs/runfiles.py alone; everything else asks it."""
    names = ('"spec.json"', '"state.json"', '"exit.json"', '"attempts"', '"stdout.log"', '"stderr.log"',
             '"notifications.txt"', '"facade.json"')
    found = [f"{path.relative_to(ROOT)}: {name}"
             for pkg in ("jobs", "supervisor", "jobctl", "facade", "client", "console")
             for path in sorted((ROOT / pkg).rglob("*.py"))
             if path != ROOT / "jobs" / "runfiles.py" for name in names if name in path.read_text()]
    assert [] == found
