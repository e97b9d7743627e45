"""The typed records (spec.json, state.json, exit.json, job definitions): decoded by msgspec, today's messages and bytes kept."""
from __future__ import annotations

import dataclasses
import json

import pytest

from jobs.definitions import load_definition, load_definitions
from jobs.errors import DefinitionError, SpecError
from jobs.runfiles import AttemptFiles
from jobs.runstate import Attempt, RunState
from jobs.spec import JobSpec
from jobs.states import JobState
from jobs.usage import Usage
from supervisor.executor import ExitRecord, read_exit
from supervisor.shim import write_exit
from tests.harness import ROOT

DEFS = load_definitions(ROOT / "jobs" / "definitions")
T = 1_700_000_000.5  # 2023-11-14T22:13:20.500000+00:00
GOOD = {"schema_version": 1, "service_id": "abc-1", "job": "waiter", "inputs": {"secondsToWait": 5},
        "auth_url": "http://h/auth?wsdl", "owner": {"username": "u", "project": None},
        "submitted_at": "2023-11-14T22:13:20.500000+00:00"}
DROP = object()
SID_PROBLEM = ("is invalid: 1-128 characters, letters, digits, '.', '_' or '-', starting with a letter or digit")
AUTH_PROBLEM = "spec: auth_url must be an http(s) URL of at most 2048 characters"
OWNER_PROBLEM = "spec: owner must be an object {username, project} of strings or nulls"
TIME_PROBLEM = "spec: submitted_at must be an ISO 8601 time with its UTC offset"


def _spec(**changes) -> dict:
    return {k: v for k, v in {**GOOD, **changes}.items() if v is not DROP}


BAD_SPECS = [
    ([1], "spec: must be a JSON object"),
    (_spec(job=DROP), "spec: missing field job"),
    (_spec(submitted_at=DROP), "spec: missing field submitted_at"),
    (_spec(colour="blue"), "spec: unknown field colour"),
    (_spec(schema_version=True), "spec: schema_version 'True' is not the integer 1"),
    (_spec(schema_version=1.0), "spec: schema_version '1.0' is not the integer 1"),
    (_spec(schema_version=2), "spec: schema_version '2' is not the integer 1"),
    (_spec(schema_version="1"), "spec: schema_version '1' is not the integer 1"),
    (_spec(service_id="../x"), f"serviceID '../x' {SID_PROBLEM}"),
    (_spec(service_id=5), f"serviceID 5 {SID_PROBLEM}"),
    (_spec(job="nope"), "spec: unknown job type 'nope'"),
    (_spec(job=5), "spec: unknown job type '5'"),
    (_spec(inputs=None), "spec: inputs must be an object"),
    (_spec(inputs=[1]), "spec: inputs must be an object"),
    (_spec(inputs={"secondsToWait": True}), "secondsToWait: must be an integer, got 'True'"),
    (_spec(inputs={"secondsToWait": -5}), "secondsToWait: must be >= 0, got -5"),
    (_spec(inputs={"bogus": 1}), "bogus: not an input of job 'waiter'"),
    (_spec(auth_url="ftp://h/auth"), AUTH_PROBLEM),
    (_spec(auth_url="http://" + "a" * 2042), AUTH_PROBLEM),
    (_spec(auth_url=5), AUTH_PROBLEM),
    (_spec(owner=None), OWNER_PROBLEM),
    (_spec(owner={"group": "g"}), OWNER_PROBLEM),
    (_spec(owner={"username": 5}), OWNER_PROBLEM),
    (_spec(owner={"username": "u" * 257}), OWNER_PROBLEM),
    (_spec(submitted_at="2023-11-14T22:13:20"), TIME_PROBLEM),  # naive: would depend on the reader's zone
    (_spec(submitted_at="yesterday"), TIME_PROBLEM),
    (_spec(submitted_at=True), TIME_PROBLEM),
    (_spec(submitted_at=0), TIME_PROBLEM),
    (_spec(submitted_at=None), TIME_PROBLEM),
]


@pytest.mark.parametrize("data,message", BAD_SPECS)
def test_a_bad_spec_is_refused_with_todays_message(data, message):
    """Each malformed field is named as before msgspec, whether the spec comes as bytes or decoded."""
    for parse in (lambda: JobSpec.parse(data, DEFS), lambda: JobSpec.parse_bytes(json.dumps(data).encode(), DEFS)):
        with pytest.raises(SpecError) as e:
            parse()
        assert message == str(e.value)


def test_spec_file_is_written_as_before_and_reads_back_equal():
    """spec.json keeps its bytes (sorted keys, indent 1, ISO time) and parses back to the same spec."""
    spec = JobSpec("abc-1", "waiter", {"secondsToWait": 5}, "http://h/auth?wsdl", {"username": "u", "project": None}, T)
    expected = ('{\n "auth_url": "http://h/auth?wsdl",\n "inputs": {\n  "secondsToWait": 5\n },\n "job": "waiter",\n'
                ' "owner": {\n  "project": null,\n  "username": "u"\n },\n "schema_version": 1,\n'
                ' "service_id": "abc-1",\n "submitted_at": "2023-11-14T22:13:20.500000+00:00"\n}\n')
    assert expected.encode() == spec.to_json()
    assert spec == JobSpec.parse_bytes(spec.to_json(), DEFS) == JobSpec.parse(GOOD, DEFS)


def test_spec_optional_fields_and_old_unix_times_still_read():
    """owner and auth_url may be left out (owner then {}), and a UNIX submitted_at of older spools is read."""
    spec = JobSpec.parse(_spec(owner=DROP, auth_url=DROP, submitted_at=T, inputs={}), DEFS)
    assert (None, {}, T, {"secondsToWait": 60}) == (spec.auth_url, spec.owner, spec.submitted_at, spec.inputs)


def test_spec_bytes_that_are_not_json_are_refused():
    """Not JSON, or too large, is named as such."""
    with pytest.raises(SpecError, match=r"^spec: not valid JSON \("):
        JobSpec.parse_bytes(b"{not json", DEFS)
    with pytest.raises(SpecError, match="^spec: larger than"):
        JobSpec.parse_bytes(b" " * 70000, DEFS)


def _state() -> RunState:
    return RunState("abc-1", "waiter", JobState.RUNNING, "running", 2, pid=12, create_time=T, queued_at=T,
                    started_at=T + 1, updated_at=T + 1, history=[Attempt(1, T, T + 0.25, 3, None, "exit code 3")])


def test_state_file_is_written_as_before_and_reads_back_equal():
    """state.json keeps its layout and ISO times; from_bytes and from_dict read the same record."""
    rs = _state()
    raw = rs.to_json()
    assert raw.startswith(b'{\n "attempt": 2,\n "create_time": 1700000000.5,\n "executor": "local",\n')
    assert b'\n "queued_at": "2023-11-14T22:13:20.500000+00:00",\n' in raw
    assert b'\n   "finished_at": "2023-11-14T22:13:20.750000+00:00",\n' in raw
    assert rs == RunState.from_bytes(raw) == RunState.from_dict(json.loads(raw))
    assert isinstance(RunState.from_bytes(raw).history[0], Attempt)


def test_state_with_usage_round_trips_with_every_field_written():
    """The usage of the attempt and of its history, and a cgroup, are written whole and read back equal
    (to_json builds its dicts field by field: a field it left out would not come back)."""
    used = Usage(cpu_user_s=1.5, cpu_system_s=0.25, memory_peak_bytes=4096, oom_kills=0, source="cgroup", wall_s=3.0)
    rs = dataclasses.replace(_state(), usage=used, cgroup="attempt-1", history=[
        Attempt(1, T, T + 0.25, 3, None, "exit code 3", False, used), Attempt(2, None, None, None, 9, "", True)])
    data = json.loads(rs.to_json())
    assert set(data) == {f.name for f in dataclasses.fields(RunState)}
    assert set(data["usage"]) == set(data["history"][0]["usage"]) == {f.name for f in dataclasses.fields(Usage)}
    assert set(data["history"][1]) == {f.name for f in dataclasses.fields(Attempt)}
    assert rs == RunState.from_bytes(rs.to_json()) == RunState.from_dict(data)


@pytest.mark.parametrize("change", [{"colour": "blue"}, {"state": "NAPPING"}, {"pid": True}, {"attempt": 1.5},
                                    {"queued_at": "soon"}, {"history": [{"attempt": 1, "note": "x"}]},
                                    {"history": [{"started_at": None}]}, {"service_id": None}])
def test_a_malformed_state_file_is_refused(change):
    """Unknown fields, states that do not exist, a bool or a float for an int, a bad time: state.json: malformed."""
    data = {**json.loads(_state().to_json()), **change}
    for decode in (lambda: RunState.from_dict(data), lambda: RunState.from_bytes(json.dumps(data).encode())):
        with pytest.raises(SpecError, match=r"^state.json: malformed \("):
            decode()


def test_a_missing_state_field_and_a_bad_service_id_are_refused():
    """service_id, job and state are required; the serviceID must be safe as a directory name."""
    data = json.loads(_state().to_json())
    for key in ("service_id", "job", "state"):
        with pytest.raises(SpecError, match=f"^state.json: malformed .*{key}"):
            RunState.from_dict({k: v for k, v in data.items() if k != key})
    with pytest.raises(SpecError, match="serviceID '../x' is invalid"):
        RunState.from_bytes(json.dumps({**data, "service_id": "../x"}).encode())
    assert RunState("a", "waiter") == RunState.from_dict({"service_id": "a", "job": "waiter", "state": "QUEUED"})


@pytest.mark.parametrize("record,expected", [
    ({"pid": 7, "started_at": "x", "ended_at": "y", "exit_code": 0, "signal": None}, ExitRecord(0, None)),
    ({"exit_code": None, "signal": 9}, ExitRecord(None, 9)),
    ({"signal": 15}, ExitRecord(None, 15)),
    ({"exit_code": 127, "signal": None, "error": "No such file"}, ExitRecord(127, None, "No such file")),
])
def test_the_shims_exit_record_is_read(tmp_path, record, expected):
    """What the shim writes (padded to its fixed size) reads back; its times and pid are skipped."""
    attempt = AttemptFiles(str(tmp_path), 1)
    assert read_exit(attempt) is None
    (tmp_path / "1").mkdir()
    write_exit(attempt.exit, record)
    assert expected == read_exit(attempt)


@pytest.mark.parametrize("raw", [b'{"exit_code": true}', b'{"exit_code": 1.0}', b'{"signal": "9"}', b"[0]",
                                 b'{"error": 5}', b"{", b"\xff"])
def test_a_malformed_exit_record_is_an_unreadable_end(tmp_path, raw):
    """A bool, a float or a text for a number, or no JSON at all: the attempt ended unreadably, it does not raise."""
    attempt = AttemptFiles(str(tmp_path), 1)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "exit.json").write_bytes(raw)
    rec = read_exit(attempt)
    assert (None, None) == (rec.exit_code, rec.signal) and rec.error.startswith("unreadable exit.json (")


DEF_BASE = 'service = "S"\nnamespace = "n"\nstart_method = "startS"\nargv = ["{python}"]\n'
BAD_DEFINITIONS = [
    (DEF_BASE.replace('service = "S"\n', ''), "service: required"),
    (DEF_BASE.replace('"S"', '5'), "service: must be a string, got int"),
    (DEF_BASE.replace('"S"', 'true'), "service: must be a string, got a boolean"),
    (DEF_BASE.replace('"S"', '"a b"'), "service: must be an identifier (letters, digits, _)"),
    (DEF_BASE.replace('"n"', '" "'), "namespace: must not be empty"),
    (DEF_BASE.replace('"startS"', '"abortService"'), "start_method: clashes with a fixed protocol method"),
    (DEF_BASE.replace('["{python}"]', '"python"'), "argv: must be a list, got str"),
    (DEF_BASE.replace('["{python}"]', '[]'), "argv: must be a non-empty list of strings"),
    (DEF_BASE.replace('["{python}"]', '[1]'), "argv: must be a non-empty list of strings"),
    (DEF_BASE + 'executor = "k8s"\n', "executor: must be one of local, slurm"),
    (DEF_BASE + 'description = 1979-05-27\n', "description: must be a string, got date"),
    (DEF_BASE + 'files = 3\n', "files: must be a table, got int"),
    (DEF_BASE + '[files]\nlog = 3\n', "files.log: must be a string, got int"),
    (DEF_BASE + '[files]\nlog = "a/b"\n', "files.log: must be a plain file name"),
    (DEF_BASE + '[files]\n"a-b" = "x.txt"\n', "files.a-b: file keys must be identifiers"),
    (DEF_BASE + '[inputs]\nserviceID = {type = "string"}\n', "inputs.serviceID: input names must be identifiers"),
    (DEF_BASE + '[inputs]\nx = "integer"\n', "inputs.x: must be a table, got str"),
    (DEF_BASE + '[inputs.x]\nmin = 0\n', "inputs.x.type: required"),
    (DEF_BASE + '[inputs.x]\ntype = "string"\ncolour = 1\n', "inputs.x.colour: unknown field"),
    (DEF_BASE + '[inputs.x]\ntype = "integer"\nmin = true\nmax = 5\n', "inputs.x.min: must be a number, got a boolean"),
    (DEF_BASE + '[inputs.x]\ntype = "integer"\nmin = "0"\nmax = 5\n', "inputs.x.min: must be a number, got str"),
    (DEF_BASE + '[inputs.x]\ntype = "integer"\nmin = 3\nmax = 1\n', "inputs.x.min: is greater than max"),
    (DEF_BASE + '[inputs.x]\ntype = "integer"\nmin = 0\nmax = 5\ndefault = "1"\n', "inputs.x.default: must be an integer, got str"),
    (DEF_BASE + '[inputs.x]\ntype = "float"\nmin = 0\nmax = 5\ndefault = true\n', "inputs.x.default: must be a number, got a boolean"),
    (DEF_BASE + '[inputs.x]\ntype = "string"\nmax_length = 0\n', "inputs.x.max_length: must be > 0"),
    (DEF_BASE + '[inputs.x]\ntype = "string"\nmax_length = 1.5\n', "inputs.x.max_length: must be an integer, got float"),
    (DEF_BASE + '[inputs.x]\ntype = "string"\npattern = "("\n', "inputs.x.pattern: not a valid regular expression"),
    (DEF_BASE + '[inputs.x]\ntype = "string"\ndefault = "abc"\npattern = "a"\n', "inputs.x.default: x: does not match a"),
    (DEF_BASE + '[outputs.status_base64]\nfile = "x"\n', "outputs.status_base64: output names must be identifiers"),
    (DEF_BASE + '[outputs.r]\nplaceholder = "x"\n', "outputs.r.file: required"),
    (DEF_BASE + '[files]\nr = "r.txt"\n[outputs.r]\nfile = "r"\nmax_bytes = -1\n', "outputs.r.max_bytes: must be > 0"),
    (DEF_BASE + '[progress]\nfile = "p"\n', "progress.file: must name a key of [files]"),
    (DEF_BASE + '[files]\np = "p.txt"\n[progress]\nfile = "p"\nkind = "fraction"\n', "progress.kind: only 'percent'"),
    (DEF_BASE + '[files]\np = "p.txt"\n[progress]\nfile = "p"\nextra = 1\n', "progress.extra: unknown field"),
    (DEF_BASE + 'progress = "p"\n', "progress: must be a table, got str"),
    (DEF_BASE + '[limits]\nmax_runtime_seconds = "long"\n', "limits.max_runtime_seconds: must be a number, got str"),
    (DEF_BASE + '[limits]\nabort_grace_seconds = -1\n', "limits.abort_grace_seconds: must be >= 0"),
    (DEF_BASE + '[limits]\nwall = 1\n', "limits.wall: unknown field"),
    (DEF_BASE + '[retry]\ncount = 101\n', "retry.count: must be in [0, 100]"),
    (DEF_BASE + '[retry]\ncount = true\n', "retry.count: must be an integer, got a boolean"),
    (DEF_BASE + '[retry]\nbackoff = 0.5\n', "retry.backoff: must be >= 1"),
    (DEF_BASE + '[retry]\ndelay_seconds = -1\n', "retry.delay_seconds: must be >= 0"),
    (DEF_BASE + '[env]\nK = 1\n', "env.K: must be a string, got int"),
    (DEF_BASE + 'env = [1]\n', "env: must be a table, got list"),
    (DEF_BASE + '[slurm]\npartition = "a b"\n', "slurm.partition: must be letters"),
    (DEF_BASE + '[slurm]\noptions = [1]\n', "slurm.options: must be a list of strings"),
    (DEF_BASE + '[slurm]\noptions = "--mem=1G"\n', "slurm.options: must be a list, got str"),
    (DEF_BASE + '[slurm]\noptions = ["--output=/tmp/x"]\n', "slurm.options: '--output=/tmp/x': --output is set by"),
    (DEF_BASE + '[slurm]\nqueue = "q"\n', "slurm.queue: unknown field"),
]


@pytest.mark.parametrize("text,message", BAD_DEFINITIONS)
def test_a_bad_definition_names_file_and_field(tmp_path, text, message):
    """Each definition mistake is reported as `file: field: problem`, in the words used before msgspec."""
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(DefinitionError) as e:
        load_definition(path)
    assert str(e.value).startswith(f"{path}: {message}")


def test_a_definitions_numbers_keep_their_type():
    """Integer bounds and defaults stay integers (the WSDL and messages show them), times become floats."""
    w = DEFS["waiter"]
    assert (int, int, int) == (type(w.inputs[0].min), type(w.inputs[0].max), type(w.inputs[0].default))
    assert (float, float, float) == (type(w.max_runtime_s), type(w.abort_grace_s), type(w.retry_backoff))
