"""The test tiers: which tests are fast (and held to it), and which need Slurm, podman or a browser.

`./bin/test --fast` runs the tests marked `fast`: in-process rule tests
that start no process (the supervisor's `step(now)` with a fake executor, the
façade's parts, the spool index, parsers); they take seconds. `./bin/test`
runs everything, in parallel (pytest-xdist).

Why a table here rather than a `pytestmark` in each module: most modules mix
in-process tests with real-process ones, and many hands edit the test
modules; one table is one place to look and to merge. A module may still mark
a test `@pytest.mark.fast` itself. A fast test that starts a process fails,
so the table cannot drift into the slow tier unnoticed.

Parallel runs: `./bin/test` gives pytest-xdist `--dist loadfile`, so every
module stays on one worker (its module-scoped stack starts once; Slurm's and
podman's tests run one after another on their shared cluster and socket).
Not `loadgroup` with xdist_group markers: xdist 3.8 sets `item._nodeid`,
which pytest 9 no longer reads, so its groups are silently ignored.
"""
from __future__ import annotations

import _posixsubprocess
import os
import subprocess
import sys
import threading

import pytest

from jobs import logs


class Only:
    """These tests of the module (by function name; every parameter of each)."""

    def __init__(self, *names: str):
        self.names = frozenset(names)

    def __contains__(self, name: str) -> bool:
        return name in self.names


class AllBut(Only):
    """Every test of the module but these."""

    def __contains__(self, name: str) -> bool:
        return name not in self.names


ALL = AllBut()

# module -> its fast tests
FAST = {
    "test_supervisor_rules": ALL,
    "test_facade_units": ALL,
    "test_facade_app": ALL,
    "test_console_index": ALL,
    # in-process tests announced by other branches of issue 16 (the guard below holds them to it)
    "test_index": ALL,
    "test_submit": ALL,
    "test_records": ALL,
    "test_spool_reads": ALL,
    "test_config": ALL,
    "test_contract": AllBut("test_waiter_rejects_bad_arguments", "test_waiter_echoes_notifications_and_finishes"),
    "test_bench": Only("test_the_bench_has_no_import_circle", "test_the_bench_finds_run_files_through_runfiles",
                       "test_fast_path_answers_byte_for_byte_like_spyne", "test_fast_path_runs_a_failing_operation_once"),
    "test_client": Only("test_status_values_are_decoded", "test_progress_is_read_from_the_facades_own_page",
                        "test_original_waiters_page_is_understood",
                        "test_a_wording_change_of_the_page_does_not_change_the_reading",
                        "test_failed_page_summary_names_the_exit_code_once",
                        "test_page_text_puts_each_block_and_fact_on_its_own_line"),
    "test_console": Only("test_form_gives_a_too_large_integer_the_range_message",
                         "test_form_refuses_an_arabic_indic_digit_as_the_soap_start_does",
                         "test_form_submits_what_passes_and_refuses_a_known_service_id"),
    "test_devauth": Only("test_demo_credentials_kept_or_reset", "test_token_store_clock_and_ttl_sources"),
    "test_facade_status_page": Only("test_every_state_has_a_view_here", "test_page_is_self_contained",
                                    "test_everything_from_the_program_is_escaped", "test_page_is_base64_ascii",
                                    "test_digest_ignores_the_clock_but_not_the_content",
                                    "test_running_page_shows_progress_elapsed_and_eta",
                                    "test_data_attributes_hold_program_text_as_text",
                                    "test_page_says_state_reason_exit_code_and_progress_in_data_attributes"),
    "test_jobctl": Only("test_bad_inputs_name_the_field", "test_submit_without_daemon_queues_the_spec",
                        "test_usage_error_is_one_line", "test_runtime_formatting"),
    "test_slurm": Only("test_sbatch_gets_an_argv_with_the_runs_paths_and_the_fixed_script",
                       "test_the_definitions_slurm_table_overrides_partition_and_adds_options",
                       "test_a_missing_run_directory_is_never_submitted", "test_an_sbatch_refusal_raises_with_its_message",
                       "test_one_squeue_call_watches_every_job", "test_an_unreachable_slurm_ends_nothing",
                       "test_without_an_exit_file_the_end_comes_from_scontrol",
                       "test_a_job_slurm_forgot_ends_from_the_completion_log",
                       "test_a_timeout_keeps_the_programs_end_and_says_timeout",
                       "test_parsers_read_squeue_scontrol_and_jobcomp_lines", "test_reasons_say_what_slurm_did",
                       "test_bad_slurm_settings_are_named", "test_bad_slurm_table_names_file_and_field"),
    "test_cgroups": Only("test_a_nonexistent_cgroup_root_is_reported_plainly",
                         "test_a_refused_limit_leaves_no_cgroup_behind",
                         "test_an_attempt_is_created_below_the_parent_never_at_a_root",
                         "test_limits_the_layout_cannot_enforce_are_listed", "test_mounts_and_own_cgroups_are_read_from_proc",
                         "test_names_and_limits_are_checked", "test_no_cgroup_filesystem_is_reported_plainly",
                         "test_the_layout_says_where_each_role_lives"),
    "test_confine": Only("test_job_users_resolve_per_project", "test_switch_problem_reads_the_capabilities",
                         "test_the_plan_travels_as_fields"),
    "test_systemd": Only("test_units_run_as_a_user_from_the_env_file_restart_on_failure_and_leave_jobs_running"),
}

# module -> (marker, its tests): the full tier's tests that need a system of their own (markers: pyproject.toml)
NEEDS = {
    "test_slurm": ("slurm", ALL),
    "test_docker": ("container", ALL),
    "test_console_browser": ("browser", ALL),
    "test_facade_status_page": ("browser", Only("test_screenshots_of_every_state",
                                                "test_browser_sees_hostile_output_as_text")),
}


def pytest_configure(config):
    """An xdist worker runs with COLUMNS=80 and LINES=24 set, where one process has neither: programs
    whose output follows the terminal's width (jobctl list cuts its last column) answer as they do there."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("COLUMNS", "LINES"):
            os.environ.pop(name, None)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        name = item.originalname
        if name in FAST.get(module, ()):
            item.add_marker(pytest.mark.fast)
        marker, tests = NEEDS.get(module, (None, ()))
        if marker and name in tests and not item.get_closest_marker("fast"):
            item.add_marker(getattr(pytest.mark, marker))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A fast test (its set-up and tear-down too) may not start a process from the test's own thread."""
    if item.get_closest_marker("fast") is None:
        yield
        return
    saved = (_posixsubprocess.fork_exec, subprocess._fork_exec, os.fork, os.posix_spawn)
    main = threading.current_thread()

    def guarded(real):
        def call(*args, **kwargs):
            if threading.current_thread() is main:
                raise AssertionError(f"{item.nodeid} is a fast test and started a process: "
                                     "take it out of the fast tier (tests/conftest.py FAST)")
            return real(*args, **kwargs)
        return call
    _posixsubprocess.fork_exec, subprocess._fork_exec, os.fork, os.posix_spawn = map(guarded, saved)
    try:
        yield
    finally:
        _posixsubprocess.fork_exec, subprocess._fork_exec, os.fork, os.posix_spawn = saved


def pytest_sessionfinish(session):
    """Remove the cgroups of this run's spools. A test's supervisor stops and leaves its jobs' cgroups to a next
    supervisor that never comes: a machine that runs the tests often would run out of memory cgroups."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or not os.path.isdir("/sys/fs/cgroup"):
        return
    from supervisor.isolation import remove_spool_cgroups
    base = factory.getbasetemp()
    remove_spool_cgroups(p for pattern in ("spool", "*/spool", "*/*/spool", "*/*/*/spool")
                         for p in base.glob(pattern) if p.is_dir())


class _CurrentStderr:
    """sys.stderr as it is at each write: pytest swaps it for every test (capsys) and closes the old one."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True, scope="session")
def in_process_logs():
    """Code run in the test process logs as jobctl configures it (JSON lines, errors only), to the current stderr.

    Why: jobctl.main configures structlog once per process with the stderr of
    that moment, and module-level loggers keep it from their first use; after
    an in-process jobctl test that stream was capsys's, closed, and a later
    test's error log (a supervisor stepped in-process) failed with "I/O
    operation on closed file". Real processes configure their own logs.
    """
    logs.configure("error", stream=_CurrentStderr())
    yield
