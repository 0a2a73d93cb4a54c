"""The `coursekit` command's conventions: --version, exit statuses a script can use, one clear line for every
error (never a traceback), refusing to grade where no sandbox can be made, and --no-isolation that grades
anyway, says so loudly, and marks every row."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

import coursekit
from coursekit.autograder import isolation
from tests import hostile_cohort as hc

COURSEKIT = str(Path(sys.executable).parent / "coursekit")


def coursekit_cli(*args: str, cwd: Path, path: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([COURSEKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    return proc.stderr


def test_version():
    proc = coursekit_cli("--version", cwd=Path.cwd())
    assert (proc.returncode, proc.stdout.strip()) == (0, f"coursekit {coursekit.__version__}")


@pytest.mark.parametrize("command", [["grade", "sdpa"], ["export"]])
def test_outside_a_course_directory_is_one_clear_line(tmp_path, command):
    one_line_error(coursekit_cli(*command, cwd=tmp_path), "is not a course directory", "nbgrader_config.py")


def test_inside_a_course_but_not_at_its_root_names_the_root(tmp_path):
    hc.make_course(tmp_path, {})
    one_line_error(coursekit_cli("grade", "sdpa", cwd=tmp_path / "solutions"), f"the course root is {tmp_path}")


def test_an_unknown_assignment_lists_the_known_ones(tmp_path):
    hc.make_course(tmp_path, {})
    one_line_error(coursekit_cli("grade", "nope", cwd=tmp_path), "no assignment 'nope'", "sdpa")


def test_without_bubblewrap_grading_refuses_and_says_how_to_fix_it(tmp_path):
    hc.make_course(tmp_path, {"reference": hc.answered(hc.REFERENCE)})
    message = one_line_error(coursekit_cli("grade", "sdpa", cwd=tmp_path, path=str(tmp_path / "empty")),
                             "bubblewrap", "apt-get install bubblewrap")
    assert not (tmp_path / "autograded").exists() and not (tmp_path / "reports" / "sdpa" / "grades.csv").exists(), message


def test_without_user_namespaces_grading_refuses_and_says_how_to_fix_it(tmp_path):
    """A bwrap that fails the way it does where the kernel forbids unprivileged user namespaces."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'bubblewrap 0.8.0'; exit 0; }\n"
                                "echo 'bwrap: No permissions to creating new namespace, likely because the kernel does "
                                "not allow non-privileged user namespaces.' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    course = tmp_path / "course"
    hc.make_course(course, {"reference": hc.answered(hc.REFERENCE)})
    one_line_error(coursekit_cli("grade", "sdpa", cwd=course, path=f"{fake}:/usr/bin:/bin"),
                   "could not create its namespaces", "user.max_user_namespaces")
    assert not (course / "autograded").exists()


def test_a_root_grader_without_a_pids_cgroup_is_refused(monkeypatch):
    """The kernel never counts root's processes against RLIMIT_NPROC, so root needs a cgroup to limit a sandbox."""
    monkeypatch.setattr(isolation, "_probed", None)
    monkeypatch.setattr(isolation.os, "geteuid", lambda: 0)
    monkeypatch.setattr(isolation, "_cgroup_parent", lambda: None)
    with pytest.raises(isolation.IsolationUnavailable, match="Run coursekit grade as an ordinary user"):
        isolation.probe()


@pytest.mark.slow
def test_no_isolation_grades_loudly_marks_every_row_and_an_isolated_run_grades_again(tmp_path):
    hc.make_course(tmp_path, {"reference": hc.answered(hc.REFERENCE), "corrupt": "{ not json"})
    proc = coursekit_cli("grade", "sdpa", "--no-isolation", cwd=tmp_path, path=str(tmp_path / "empty"))
    assert proc.returncode == 1, proc.stderr  # 1: one submission could not be graded
    assert proc.stderr.startswith("WARNING: --no-isolation: submissions run with YOUR rights"), proc.stderr
    assert "1 graded WITHOUT isolation" in proc.stdout
    with (tmp_path / "reports" / "sdpa" / "grades.csv").open() as handle:
        rows = {r["student"]: r for r in csv.DictReader(handle)}
    assert {r["isolation"] for r in rows.values()} == {"none"} and rows["reference"]["score"] == "10"

    export = coursekit_cli("export", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert "sdpa: graded without isolation" in (tmp_path / "reports" / "gradebook.csv").read_text()

    proc = coursekit_cli("grade", "sdpa", cwd=tmp_path)
    assert proc.returncode == 1 and "WARNING" not in proc.stderr, proc.stderr
    with (tmp_path / "reports" / "sdpa" / "grades.csv").open() as handle:
        rows = {r["student"]: r for r in csv.DictReader(handle)}
    assert (rows["reference"]["isolation"], rows["reference"]["score"]) == ("bwrap", "10"), "graded again, isolated"


def test_info_reports_the_isolation_this_machine_gives(tmp_path):
    proc = coursekit_cli("info", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"isolation {isolation.probe().describe()}" in proc.stdout
    blocked = coursekit_cli("info", cwd=tmp_path, path=str(tmp_path / "empty"))
    assert "isolation NONE: coursekit grade will refuse to grade here: bubblewrap (`bwrap`) is not installed" in blocked.stdout
