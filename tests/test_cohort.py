"""`coursekit report`: a planted cohort gives the right histogram, pass rates and commonest mistake first, and the
page renders in headless Chromium with no console error, no script and no request leaving the machine."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coursekit.autograder.cohort import TESTS_COLUMNS, compute, write_report
from coursekit.autograder.reports import GRADE_COLUMNS
from tests.conftest import ROOT

COURSEKIT = str(Path(sys.executable).parent / "coursekit")
CHROMIUM = os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TESTS = [("test-shapes", 1), ("test-values", 3), ("test-padding", 2), ("test-causal", 2), ("test-reference", 2)]
# Planted learners: which tests fail, and with which code. A hostile learner id must come out escaped.
FAILS = {
    "unscaled": {"test-values": "sdpa.unscaled", "test-reference": "sdpa.unscaled"},
    "inverted": {"test-padding": "mask.inverted", "test-causal": "mask.inverted", "test-reference": "mask.inverted"},
}
COHORT = {**{f"ref{i}": {} for i in range(3)}, **{f"uns{i}": FAILS["unscaled"] for i in range(4)},
          **{f"inv{i}": FAILS["inverted"] for i in range(2)}, "<img src=x onerror=alert(1)>": FAILS["unscaled"]}
NOT_GRADED = {"looper": "timed out: the whole notebook ran longer than 600 s",
              "exiter": "the learner's process died (exit code 0) in cell 4"}


@pytest.fixture
def course(tmp_path) -> Path:
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)  # a course directory, as `coursekit report` requires
    shutil.copytree(ROOT / "solutions" / "sdpa", tmp_path / "solutions" / "sdpa")
    reports = tmp_path / "reports" / "sdpa"
    reports.mkdir(parents=True)
    with (reports / "grades.csv").open("w", newline="") as grades, (reports / "tests.csv").open("w", newline="") as tests:
        g, t = csv.writer(grades), csv.writer(tests)
        g.writerow(GRADE_COLUMNS)
        t.writerow(TESTS_COLUMNS)
        for student, fails in COHORT.items():
            score = sum(points for test, points in TESTS if test not in fails)
            g.writerow([student, "sdpa", "sdpa", score, 10, "graded", " ".join(sorted(set(fails.values()))),
                        "written answers await a human grader", "bwrap"])
            for test, points in TESTS:
                code = fails.get(test, "")
                t.writerow([student, "sdpa", "sdpa", test, 0 if code else points, points, "no" if code else "yes",
                            code, f"CheckFailed: [{code}] the sentence for {code}" if code else ""])
        for student, why in NOT_GRADED.items():
            g.writerow([student, "sdpa", "sdpa", "", 10, "failed", "", why, "bwrap"])
    return tmp_path


def test_planted_cohort_numbers(course):
    cohort = compute(course, "sdpa")
    histogram = dict(cohort.histogram)
    # reference 10 (x3), unscaled 5 (x5 with the hostile id), inverted 10 - 2 - 2 - 2 = 4 (x2)
    assert histogram == {**{str(p): 0 for p in range(11)}, "10": 3, "5": 5, "4": 2}
    assert sorted(cohort.scores.values()) == [4, 4, 5, 5, 5, 5, 5, 10, 10, 10]
    assert [code for code, *_ in cohort.diagnoses] == ["sdpa.unscaled", "mask.inverted"], "commonest first"
    assert cohort.diagnoses[0][1] == 5 and cohort.diagnoses[1][1] == 2
    rates = {name: (passed, attempted) for name, _, passed, attempted in cohort.pass_rates}
    assert rates["test-shapes"] == (10, 10) and rates["test-values"] == (5, 10) and rates["test-reference"] == (3, 10)
    assert {s for s, _, _ in cohort.failed} == set(NOT_GRADED), "not graded is listed, never counted as 0"
    assert cohort.pending_manual == 10


def test_report_renders_offline_in_chromium(course):
    proc = subprocess.run([COURSEKIT, "report", "sdpa"], cwd=course, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = course / "reports" / "sdpa" / "report.html"
    text = page.read_text()
    assert "<script" not in text and not re.search(r'(?:src|href)="(?:https?:)?//', text)
    assert "<img src=x" not in text, "a learner id reached the page unescaped"
    assert text.count('src="data:image/png;base64,') == 3
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM}")
    outside, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps"])
        context = browser.new_context(viewport={"width": 1200, "height": 900}, service_workers="block")
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            ("file:", "data:", "blob:", "about:")) else (outside.append(route.request.url), route.abort()))
        page_ = context.new_page()
        page_.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page_.on("pageerror", lambda error: errors.append(str(error)))
        page_.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page_.goto(page.as_uri(), wait_until="load")
        widths = page_.evaluate("() => [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == 3 and all(w > 300 for w in widths), widths
        diagnoses = page_.locator("table:has(caption:text('Diagnoses by code')) tbody tr")
        assert diagnoses.first.locator("td").first.inner_text() == "sdpa.unscaled"
        not_graded = page_.locator("table:has(caption:text('Not graded'))").inner_text()
        assert "looper" in not_graded and "timed out" in not_graded and "exiter" in not_graded
        page_.locator("details").first.click()
        assert page_.evaluate("() => document.images.length") == 3, "a learner id became an element"
        page_.screenshot(path=str(course / "report.png"), full_page=True)
        browser.close()
    assert not outside, f"requests left the machine: {outside}"
    assert not errors, f"console errors: {errors}"
