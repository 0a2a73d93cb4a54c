"""``coursekit report ASSIGNMENT``: the cohort at a glance, as one offline HTML page.

Read from what ``coursekit grade`` wrote in ``reports/<assignment>/``: ``grades.csv`` (one row per learner and
notebook) and ``tests.csv`` (one row per learner and test, with the failure's code). The page shows:

- the distribution of automatic points (a histogram; submissions that could not be graded are not in it);
- each test's pass rate;
- the commonest diagnoses, by their stable code (``sdpa.unscaled``, ``mask.inverted``, ...), with how many
  learners hit each and the sentence they read;
- the submissions that could not be graded, and why.

Plots are matplotlib PNGs embedded in the page, each with the numbers beside it in a table; the page has no
script and loads nothing, so it opens anywhere and can be mailed to a colleague. Every text that came from a
submission (ids, messages) is escaped.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

TESTS_COLUMNS = ("student", "assignment", "notebook", "test", "points", "max_points", "passed", "code", "message")


@dataclass
class Cohort:
    """What the page shows, computed from the CSVs (plain data, so tests can check the numbers directly)."""

    assignment: str
    max_points: float
    scores: dict[str, float]  # student -> automatic points, graded submissions only
    failed: list[tuple[str, str, str]]  # (student, notebook, why)
    histogram: list[tuple[str, int]]  # (bin label, learners)
    pass_rates: list[tuple[str, float, int, int]]  # (test, max points, passed, attempted)
    diagnoses: list[tuple[str, int, list[str], str]]  # (code, learners, tests, commonest message)
    pending_manual: int = 0
    warnings: list[str] = field(default_factory=list)


def _sentence(message: str) -> str:
    """A failure's sentence without what comes before it: ``CheckFailed: [sdpa.unscaled] Your...`` -> ``Your...``."""
    from coursekit.grading.core import failure_code

    code = failure_code(message)
    return message.split(f"[{code}] ", 1)[-1] if code else message


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _bins(max_points: float) -> list[tuple[float, float, str]]:
    """Integer bins up to 20 points; ten equal bins beyond."""
    if max_points <= 20:
        top = int(max_points)
        return [(p, p + 1, f"{p}") for p in range(top + 1)]
    width = max_points / 10
    return [(i * width, (i + 1) * width, f"{i * width:g}–{(i + 1) * width:g}") for i in range(10)]


def compute(course_dir: Path, assignment: str) -> Cohort:
    reports = Path(course_dir) / "reports" / assignment
    grades_path = reports / "grades.csv"
    if not grades_path.exists():
        from coursekit.autograder.nbgrader_io import CourseError

        raise CourseError(f"no {grades_path.relative_to(course_dir)}: run `coursekit grade {assignment}` first")
    grades = _read_csv(grades_path)
    scores: dict[str, float] = defaultdict(float)
    maxima: dict[str, float] = {}
    failed_students = set()
    failed = []
    pending = 0
    for row in grades:
        maxima[row["notebook"]] = max(maxima.get(row["notebook"], 0.0), float(row["max_score"] or 0))
        if row["status"] != "graded":
            failed.append((row["student"], row["notebook"], row["detail"]))
            failed_students.add(row["student"])
        else:
            scores[row["student"]] += float(row["score"] or 0)
            pending += "await a human grader" in row["detail"]
    scores = {s: v for s, v in scores.items() if s not in failed_students}
    max_points = sum(maxima.values())
    bins = _bins(max_points)
    histogram = []
    for i, (low, high, label) in enumerate(bins):
        last = i == len(bins) - 1
        histogram.append((label, sum(low <= v < high or (last and v == high) for v in scores.values())))

    cohort = Cohort(assignment, max_points, dict(sorted(scores.items())), sorted(failed), histogram, [], [],
                    pending_manual=pending)
    tests_path = reports / "tests.csv"
    if not tests_path.exists():
        cohort.warnings.append("No tests.csv beside grades.csv: grade again with this coursekit for per-test results.")
        return cohort
    tests = [r for r in _read_csv(tests_path) if r["student"] in scores]
    order: dict[str, tuple[float, int, int]] = {}
    for row in tests:
        name = row["test"] if len(maxima) == 1 else f"{row['notebook']}/{row['test']}"
        points, passed, attempted = order.get(name, (float(row["max_points"] or 0), 0, 0))
        order[name] = (points, passed + (row["passed"] == "yes"), attempted + 1)
    cohort.pass_rates = [(name, points, passed, attempted) for name, (points, passed, attempted) in order.items()]
    learners: dict[str, set[str]] = defaultdict(set)
    where: dict[str, set[str]] = defaultdict(set)
    messages: dict[str, Counter] = defaultdict(Counter)
    for row in tests:
        if row["passed"] != "yes" and row["code"]:
            learners[row["code"]].add(row["student"])
            where[row["code"]].add(row["test"])
            messages[row["code"]][_sentence(row["message"])] += 1
    cohort.diagnoses = sorted(((code, len(who), sorted(where[code]), messages[code].most_common(1)[0][0])
                               for code, who in learners.items()), key=lambda d: (-d[1], d[0]))
    return cohort


def record_tests(course_dir: Path, assignment: str, rows) -> Path:
    """Write ``reports/<assignment>/tests.csv``: each graded learner's tests, points, code and message."""
    from coursekit.autograder.files import atomic_write
    from coursekit.autograder.nbgrader_io import read_results
    from coursekit.grading.core import failure_code

    course = Path(course_dir)
    graded = {(r.student, r.notebook) for r in rows if r.status == "graded"}
    results = read_results(course, assignment, sorted({s for s, _ in graded}))
    target = course / "reports" / assignment / "tests.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TESTS_COLUMNS)
    for result in results:
        if (result.student, result.notebook) not in graded:
            continue
        for grade_id, cell in result.cells.items():
            if cell.score is None and not cell.error:
                continue  # a written answer waiting for a human grader
            passed = cell.score is not None and cell.score >= cell.max_score and not cell.error
            writer.writerow([result.student, assignment, result.notebook, grade_id, f"{cell.score or 0:g}",
                             f"{cell.max_score:g}", "yes" if passed else "no", failure_code(cell.error) or "",
                             cell.error])
    atomic_write(target, buffer.getvalue())
    return target


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(cohort: Cohort) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plots = {}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = [label for label, _ in cohort.histogram]
    ax.bar(range(len(labels)), [n for _, n in cohort.histogram], color="#4c72b0", edgecolor="white")
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 12 else 0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"Automatic points (of {cohort.max_points:g})")
    ax.set_ylabel("Learners")
    ax.set_title(f"{cohort.assignment}: automatic points of {len(cohort.scores)} graded submissions")
    plots["histogram"] = _png(fig)
    if cohort.pass_rates:
        names = [name for name, *_ in cohort.pass_rates]
        rates = [100 * passed / attempted if attempted else 0 for _, _, passed, attempted in cohort.pass_rates]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.3))
        bars = ax.barh(range(len(names)), rates, color="#55a868")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.bar_label(bars, labels=[f"{r:.0f}%" for r in rates], padding=3)
        ax.set_xlabel("Learners who pass (%)")
        ax.set_title(f"{cohort.assignment}: pass rate of each test")
        plots["pass_rates"] = _png(fig)
    if cohort.diagnoses:
        top = cohort.diagnoses[:10]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(top) + 1.3))
        ax.barh(range(len(top)), [n for _, n, _, _ in top], color="#c44e52")
        ax.set_yticks(range(len(top)), [code for code, *_ in top])
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Learners")
        ax.set_title(f"{cohort.assignment}: commonest diagnoses")
        plots["diagnoses"] = _png(fig)
    return plots


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60em; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.8em 0; } td, th { border: 1px solid #d0d7de; padding: 0.25em 0.6em;
text-align: left; vertical-align: top; } th { background: #f6f8fa; } td.n { text-align: right; }
code { background: #f6f8fa; padding: 0 0.25em; } img { max-width: 100%; } .note { color: #57606a; }
details { margin: 0.5em 0 1em; }
"""


def _table(header: list[str] | None, rows: list[list[str]], numeric: set[int] = frozenset(), caption: str = "") -> str:
    head = "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f"<table>{cap}{head}<tbody>{body}</tbody></table>"


def render(cohort: Cohort) -> str:
    e = html.escape
    plots = _plots(cohort)
    scores = list(cohort.scores.values())
    summary = [
        ["Submissions", str(len(cohort.scores) + len({s for s, _, _ in cohort.failed}))],
        ["Graded", str(len(cohort.scores))],
        ["Could not be graded", str(len({s for s, _, _ in cohort.failed}))],
        ["Automatic points: mean, median", f"{statistics.mean(scores):.1f}, {statistics.median(scores):g} of "
                                           f"{cohort.max_points:g}" if scores else "-"],
        ["Notebooks whose written answers await a human grader", str(cohort.pending_manual)],
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Cohort report: {e(cohort.assignment)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Cohort report: {e(cohort.assignment)}</h1>",
        f'<p class="note">Made by <code>coursekit report</code> on '
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from reports/{e(cohort.assignment)}/. Automatic points "
        "only: written answers count once graded by hand in the formgrader.</p>",
        *[f'<p class="note">{e(w)}</p>' for w in cohort.warnings],
        _table(None, [[a, e(b)] for a, b in summary], numeric={1}),
        '<h2 id="scores">Scores</h2>',
        f'<img alt="Histogram of automatic points" src="data:image/png;base64,{plots["histogram"]}">',
        "<details><summary>The numbers</summary>" + _table(
            ["Automatic points", "Learners"], [[e(label), str(n)] for label, n in cohort.histogram],
            numeric={1}, caption="Score histogram") + "</details>",
    ]
    if cohort.pass_rates:
        parts += ['<h2 id="tests">Each test</h2>',
                  f'<img alt="Pass rate of each test" src="data:image/png;base64,{plots["pass_rates"]}">',
                  _table(["Test", "Points", "Pass", "Pass rate"],
                         [[f"<code>{e(name)}</code>", f"{points:g}", f"{passed} of {attempted}",
                           f"{100 * passed / attempted:.0f}%" if attempted else "-"]
                          for name, points, passed, attempted in cohort.pass_rates],
                         numeric={1, 2, 3}, caption="Pass rate per test")]
    parts.append('<h2 id="diagnoses">Commonest diagnoses</h2>')
    if cohort.diagnoses:
        parts += [f'<img alt="Commonest diagnoses" src="data:image/png;base64,{plots["diagnoses"]}">',
                  _table(["Code", "Learners", "In tests", "What they read"],
                         [[f"<code>{e(code)}</code>", str(n), ", ".join(f"<code>{e(t)}</code>" for t in tests),
                           e(message)] for code, n, tests, message in cohort.diagnoses],
                         numeric={1}, caption="Diagnoses by code")]
    else:
        parts.append('<p class="note">No failing test carries a diagnosis code.</p>')
    parts.append('<h2 id="not-graded">Could not be graded</h2>')
    if cohort.failed:
        parts.append(_table(["Learner", "Notebook", "Why"],
                            [[e(s), e(nb), e(why)] for s, nb, why in cohort.failed], caption="Not graded"))
        parts.append('<p class="note">These have no score (not a zero) in grades.csv and the export, and are '
                     "flagged in the formgrader. Fix what the reason names, or grade them by hand.</p>")
    else:
        parts.append('<p class="note">Every submission was graded.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(course_dir: Path, assignment: str) -> Path:
    """Write ``reports/<assignment>/report.html`` (atomically, under the assignment's grading lock: never from a
    half-finished ``coursekit grade``) and return its path."""
    from coursekit.autograder.files import RunLock, atomic_write

    reports = Path(course_dir) / "reports" / assignment
    with RunLock(reports / ".lock", f"coursekit grade {assignment}"):
        cohort = compute(Path(course_dir), assignment)
        target = reports / "report.html"
        atomic_write(target, render(cohort))
    return target
