"""A grading run stopped at any moment leaves nothing running and loses nothing; two runs of one assignment
never interleave. (A run killed mid-batch and run again is in test_autograder_grade.py, which has an
uninterrupted run of the same submissions to compare with.)

Stopped runs are started by :func:`tests.hostile_cohort.supervise`, which sees every process they leave.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import hostile_cohort as hc

pytestmark = pytest.mark.slow
COURSEKIT = str(Path(sys.executable).parent / "coursekit")


def test_ctrl_c_stops_the_run_says_what_was_kept_and_leaves_nothing_running(tmp_path):
    hc.make_course(tmp_path, {"loops-forever": hc.answered(hc.REFERENCE + "\nwhile True:\n    pass\n")})
    outcome = hc.supervise(tmp_path, "sandbox", "ctrl-c")
    assert outcome["stopped"], f"the run ended before its sandbox was seen; it ran {outcome['seen']}"
    assert outcome["code"] == 130, outcome
    assert "interrupted after grading 0 of 1 submissions" in outcome["stderr"]
    assert "Traceback" not in outcome["stderr"], outcome["stderr"]
    assert outcome["survivors"] == []


def test_two_runs_of_one_assignment_take_turns(tmp_path):
    hc.make_course(tmp_path, {"reference": hc.answered(hc.REFERENCE)})
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
