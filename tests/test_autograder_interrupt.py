"""A grading run killed at any moment leaves nothing running, loses nothing, and the next run finishes the
batch with the grades an uninterrupted run gives; two runs of one assignment never interleave.

The killed runs are started by a small supervisor that makes itself a child subreaper: whatever the killed
run leaves behind (pool workers, multiprocessing's resource tracker, sandboxes) is reparented to it, so the
test sees every survivor instead of losing them to init.
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coursekit.autograder.batch import GradeSettings, grade_assignment
from tests import hostile_cohort as hc

pytestmark = pytest.mark.slow
COURSEKIT = str(Path(sys.executable).parent / "coursekit")
SETTINGS = GradeSettings(workers=2, memory_mb=2048, cell_timeout_s=30, notebook_timeout_s=120, progress=False)

SUPERVISOR = r"""
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of the run become our children
course, coursekit, wait_for, how = sys.argv[1:5]
run = subprocess.Popen([coursekit, "grade", "sdpa", "--workers", "2", "--cell-timeout", "60"], cwd=course,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)

def processes():
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), fields[0], cmdline)  # ppid, state, command line
    return table

def descendants(root):
    table, found, frontier = processes(), [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, state, cmdline) in table.items():
            if ppid == parent and state != "Z":
                found.append(cmdline)
                frontier.append(pid)
    return found

manifest = os.path.join(course, "reports", "sdpa", "manifest.json")
deadline = time.monotonic() + 600
while time.monotonic() < deadline and run.poll() is None:
    if wait_for == "one-graded" and os.path.exists(manifest) and json.load(open(manifest)):
        break
    if wait_for == "sandbox" and any("-m coursekit.autograder.child" in c for c in descendants(run.pid)):
        break
    time.sleep(0.05)
graded_when_stopped = len(json.load(open(manifest))) if os.path.exists(manifest) else 0
if how == "kill-parent":
    os.kill(run.pid, signal.SIGKILL)
else:
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole foreground group
code = run.wait(timeout=120)
stderr = run.stderr.read()
for _ in range(200):  # give the kernel a moment to deliver the parent-death signals
    left = descendants(os.getpid())
    if not left:
        break
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    time.sleep(0.05)
print(json.dumps({"code": code, "stderr": stderr, "survivors": left, "graded_when_stopped": graded_when_stopped}))
for pid in list(processes()):
    if processes().get(pid, (0,))[0] == os.getpid():
        os.kill(pid, signal.SIGKILL)
"""


def supervise(course: Path, wait_for: str, how: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", SUPERVISOR, str(course), COURSEKIT, wait_for, how],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same(rows) -> set[tuple]:
    """What must not depend on the run: each row, with the fresh seeds of hidden tests blanked out."""
    return {(r.student, r.notebook, r.score, r.status, re.sub(r"seed=\d+", "seed=N", r.detail), r.isolation) for r in rows}


SUBMISSIONS = {"reference": hc.answered(hc.REFERENCE), "unscaled": hc.answered(hc.UNSCALED), "blank": hc.release()}


def test_a_run_killed_mid_batch_leaves_nothing_running_and_the_rerun_finishes_it(tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    hc.make_course(uninterrupted, SUBMISSIONS)
    expected = same(grade_assignment(uninterrupted, "sdpa", SETTINGS))

    killed = tmp_path / "killed"
    hc.make_course(killed, SUBMISSIONS)
    outcome = supervise(killed, "one-graded", "kill-parent")
    assert outcome["code"] == -signal.SIGKILL
    assert outcome["survivors"] == [], "the killed run left processes behind"
    assert 1 <= outcome["graded_when_stopped"] < len(SUBMISSIONS), "the run must be killed mid-batch"
    for report in (killed / "reports" / "sdpa").glob("*.json"):
        json.loads(report.read_text())  # written whole or not at all
    assert same(grade_assignment(killed, "sdpa", SETTINGS)) == expected


def test_ctrl_c_stops_the_run_says_what_was_kept_and_leaves_nothing_running(tmp_path):
    hc.make_course(tmp_path, {"loops-forever": hc.answered(hc.REFERENCE + "\nwhile True:\n    pass\n")})
    outcome = supervise(tmp_path, "sandbox", "ctrl-c")
    assert outcome["code"] == 130, outcome
    assert "interrupted after grading 0 of 1 submissions" in outcome["stderr"]
    assert "Traceback" not in outcome["stderr"], outcome["stderr"]
    assert outcome["survivors"] == []


def test_two_runs_of_one_assignment_take_turns(tmp_path):
    hc.make_course(tmp_path, {"reference": SUBMISSIONS["reference"]})
    first = subprocess.Popen([COURSEKIT, "grade", "sdpa"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = tmp_path / "reports" / "sdpa" / ".lock"
    deadline = time.monotonic() + 300
    while not (lock.exists() and lock.read_text().strip()) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run([COURSEKIT, "grade", "sdpa"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, first_err + second.stderr
    assert f"already running (pid {first.pid} " in second.stderr, second.stderr
    assert "reference  sdpa             10/10  graded" in second.stdout, second.stdout
    assert len(json.loads((tmp_path / "reports" / "sdpa" / "manifest.json").read_text())) == 1
