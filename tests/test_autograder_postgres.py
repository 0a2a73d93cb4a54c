"""`coursekit grade` with the gradebook in a real PostgreSQL server on loopback (nbgrader's db_url).

Needs the Debian package `postgresql` (server binaries) and `psycopg2-binary`; `.ci/run` installs both.
Elsewhere the test skips and says what is missing.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
from glob import glob
from pathlib import Path

import pytest

from coursekit.autograder.batch import GradeSettings, grade_assignment
from tests.conftest import ROOT
from tests.helpers import SDPA_SUBMISSIONS

pytestmark = pytest.mark.slow
BIN = sorted(glob("/usr/lib/postgresql/*/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    if not BIN:
        pytest.skip("PostgreSQL server binaries not found (install the Debian package `postgresql`)")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed")
    base = Path(tempfile.mkdtemp(prefix="coursekit-pg-"))  # pytest's own temp root is closed to other users
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port, bindir = base / "data", free_port(), BIN[-1]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    run(f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "grader")
    run(f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(base / "log"),
        "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
    try:
        run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "grader", "course")
        yield f"postgresql+psycopg2://grader@127.0.0.1:{port}/course", psycopg2
    finally:
        run(f"{bindir}/pg_ctl", "-D", str(data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_grading_with_a_postgresql_gradebook(postgres, tmp_path):
    db_url, psycopg2 = postgres
    course = tmp_path
    config = (ROOT / "nbgrader_config.py").read_text() + f'\nc.CourseDirectory.db_url = "{db_url}"\n'
    (course / "nbgrader_config.py").write_text(config)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    release = json.loads((ROOT / "exercises" / "sdpa" / "sdpa.ipynb").read_text())
    for student in ("reference", "unscaled"):
        nb = json.loads(json.dumps(release))
        for cell in nb["cells"]:
            if cell["metadata"].get("nbgrader", {}).get("grade_id") == "sdpa-answer":
                cell["source"] = SDPA_SUBMISSIONS[student]
        (course / "submitted" / student / "sdpa").mkdir(parents=True)
        (course / "submitted" / student / "sdpa" / "sdpa.ipynb").write_text(json.dumps(nb))

    rows = {r.student: r for r in grade_assignment(course, "sdpa", GradeSettings(workers=2, progress=False))}
    assert (rows["reference"].score, rows["unscaled"].score) == (10, 5)
    assert not (course / "gradebook.db").exists(), "grading must use the configured database, not SQLite"
    with psycopg2.connect(db_url.replace("+psycopg2", "")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT student.id, SUM(grade.auto_score) FROM grade "
                       "JOIN submitted_notebook ON grade.notebook_id = submitted_notebook.id "
                       "JOIN submitted_assignment ON submitted_notebook.assignment_id = submitted_assignment.id "
                       "JOIN student ON submitted_assignment.student_id = student.id GROUP BY student.id")
        assert dict(cursor.fetchall()) == {"reference": 10.0, "unscaled": 5.0}
