"""The settings table (jobs/config.py SETTINGS): one row per key, the env file, readers and messages."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from jobs import config
from jobs.errors import ConfigError
from tests.harness import ROOT

# where each component named in a row's readers lives (jobctl may leave supervisor/ for a package of its own)
SOURCES = {
    "facade": ["facade/**/*.py"], "supervisor": ["supervisor/**/*.py"], "jobctl": ["supervisor/cli.py", "jobctl/**/*.py"],
    "console": ["console/**/*.py"], "devauth": ["devauth/**/*.py"], "client": ["client/**/*.py"],
    "bench": ["bench/**/*.py"],
}


def _source(component: str) -> str:
    paths = {p for pattern in SOURCES[component] for p in ROOT.glob(pattern)}
    if component == "supervisor":
        paths.discard(ROOT / "supervisor" / "cli.py")  # jobctl's
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(paths))


def test_every_key_is_in_the_env_file_and_every_line_of_it_in_the_table():
    """The shipped env file shows every setting, and names none the table does not know."""
    assert sorted(config.CONFIG_KEYS) == sorted(config.read_env_file(ROOT / "env"))


def test_each_key_is_written_once_and_is_an_attribute():
    """No key twice in the table; Config has one attribute per key (and env_file)."""
    assert len(set(config.CONFIG_KEYS)) == len(config.CONFIG_KEYS)
    assert [s.attr for s in config.SETTINGS] + ["env_file"] == [f.name for f in dataclasses.fields(config.Config)]


@pytest.mark.parametrize("setting", config.SETTINGS, ids=lambda s: s.key)
def test_the_readers_named_in_the_table_read_the_setting(setting):
    """Each component a row names reads the attribute: the table's `readers` says who is affected by a change."""
    names = {setting.attr} | ({"retention_seconds"} if setting.key == "RETENTION_DAYS" else set())  # a property
    assert setting.readers and set(setting.readers) <= set(SOURCES)
    for component in setting.readers:
        assert any(re.search(rf"\.{n}\b", _source(component)) for n in names), (setting.key, component)


def test_defaults_parse_and_are_todays(tmp_path):
    """An empty env file gives the built-in values; paths default under the state directory."""
    (tmp_path / "env").write_text("# nothing set\n")
    cfg = config.load(tmp_path / "env", {"STATE_DIRECTORY": str(tmp_path / "state")})
    assert (4, 7.0, 604800.0, "info", ("127.0.0.1", "::1"), True, "local", (), None) == (
        cfg.max_parallel_jobs, cfg.retention_days, cfg.retention_seconds, cfg.log_level, cfg.forwarded_allow_ips,
        cfg.supervisor_watch, cfg.executor, cfg.auth_managers, cfg.slurm_bin_dir)
    assert (tmp_path / "state" / "spool", tmp_path / "state" / "console" / "secret") == (
        cfg.spool_dir, cfg.console_secret_file)


def test_environment_beats_the_env_file_which_beats_the_default(tmp_path):
    """Precedence: environment, env file, built-in; unknown keys in either are ignored; paths next to the file."""
    (tmp_path / "env").write_text("FACADE_PORT=9000\nCONSOLE_PORT=9001\nNOT_OURS=1\nSLURM_BIN_DIR=bin\n")
    cfg = config.load(tmp_path / "env", {"CONSOLE_PORT": "9002", "ALSO_NOT_OURS": "x", "LOG_LEVEL": "WARNING"})
    assert (9000, 9002, 8081, "warning", tmp_path / "bin") == (
        cfg.facade_port, cfg.console_port, cfg.devauth_port, cfg.log_level, cfg.slurm_bin_dir)


@pytest.mark.parametrize("key,value,message", [
    ("MAX_PARALLEL_JOBS", "0", "MAX_PARALLEL_JOBS=0: must be in [1, 10000]"),
    ("FACADE_PORT", "http", "FACADE_PORT='http': must be an integer in [0, 65535]"),
    ("RECONCILE_SECONDS", "x", "RECONCILE_SECONDS='x': must be a number in [0.1, 3600]"),
    ("CONSOLE_NICE", "20", "CONSOLE_NICE=20: must be in [0, 19]"),
    ("LOG_LEVEL", "Loud", "LOG_LEVEL='Loud': must be one of debug, info, warning, error"),
    ("SUPERVISOR_WATCH", "maybe", "SUPERVISOR_WATCH='maybe': must be true or false"),
    ("FACADE_FAST_PATH", "2", "FACADE_FAST_PATH='2': must be true or false"),
    ("EXECUTOR", "k8s", "EXECUTOR='k8s': must be one of local, slurm"),
    ("SUPERVISOR_ON_STOP", "kill", "SUPERVISOR_ON_STOP='kill': must be one of leave, requeue"),
    ("FORWARDED_ALLOW_IPS", "proxy", "FORWARDED_ALLOW_IPS: 'proxy' is not an IP address or network (e.g. 10.0.0.0/8), nor '*'"),
    ("SLURM_ACCOUNT", "a b", "SLURM_ACCOUNT='a b': must be letters, digits, '_', '.', ',' or '-', or empty for the cluster's default"),
    ("SLURM_OPTIONS", "--mem 4G", "SLURM_OPTIONS: '4G': each option must be one argument starting with '-' (write --mem=4G, not --mem 4G)"),
])
def test_a_bad_value_is_named_with_its_allowed_range(tmp_path, key, value, message):
    """Every parser names the key and what it accepts, in the words used before the table."""
    (tmp_path / "env").write_text("")
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path / "env", {key: value})
    assert message == str(e.value)


def test_a_config_can_be_copied_with_a_change(tmp_path):
    """Config stays a frozen dataclass: the supervisor's drain and the bench use dataclasses.replace."""
    (tmp_path / "env").write_text("")
    cfg = config.load(tmp_path / "env", {})
    assert 0 == dataclasses.replace(cfg, max_parallel_jobs=0).max_parallel_jobs
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_parallel_jobs = 1
    assert isinstance(cfg.definitions_dir, Path)
