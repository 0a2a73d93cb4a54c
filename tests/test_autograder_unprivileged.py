"""The unprivileged path, for real: an instructor who is not root grades the hostile cohort, and it holds.

Run as root (as CI runs), the test makes an ordinary user out of nothing but a free uid (no account is
created): it gives that uid a Python it can read (Debian's ``/usr/bin/python3``, with a virtual environment
under ``/tmp`` that reuses this environment's packages through a ``.pth`` file: same Python 3.11 ABI), its
own copy of ``coursekit``, a home and a course directory, all owned by it as an instructor's would be (so
only the sandbox stands between a submission and them), and runs ``coursekit grade`` as that uid. Run as an ordinary user, the
rest of the suite already takes the unprivileged path, and this test says so and skips.
"""

import csv
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

import coursekit
from tests import hostile_cohort as hc
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
SYSTEM_PYTHON = Path("/usr/bin/python3")
PACKAGE = Path(coursekit.__file__).resolve().parent


def free_uid() -> int:
    for uid in range(47000, 48000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if hc.processes_of(uid) == 0:
                return uid
    raise RuntimeError("no free uid in 47000-47999")


def as_user(uid: int, home: Path, *command: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "USER": f"instructor{uid}", "LOGNAME": f"instructor{uid}", "LANG": "C.UTF-8",
           "PATH": "/usr/local/bin:/usr/bin:/bin"}
    return subprocess.run(command, cwd=cwd, env=env, user=uid, group=uid, extra_groups=[], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def instructor():
    """(uid, python, home, base) of an ordinary user with a Python and a coursekit of its own."""
    if os.geteuid() != 0:
        pytest.skip("already running as an ordinary user: every grading test here takes the unprivileged path")
    version = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip() if SYSTEM_PYTHON.exists() else ""
    if version != str(sys.version_info[:2]):
        pytest.skip(f"needs a system Python {sys.version_info[:2]} readable by all at {SYSTEM_PYTHON} (found {version or 'none'})")
    uid = free_uid()
    site_packages = sysconfig.get_paths()["purelib"]
    readable = as_user(uid, Path("/"), "/bin/sh", "-c", f"test -r {site_packages}/torch/__init__.py", cwd=Path("/"))
    if readable.returncode != 0:
        pytest.skip(f"the virtual environment of this checkout ({ROOT}) cannot be read by other users")
    base = Path(tempfile.mkdtemp(prefix="coursekit-unprivileged-"))
    try:
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(base / "venv")], check=True)
        layer = next((base / "venv" / "lib").glob("python3*/site-packages"))
        shutil.copytree(PACKAGE, base / "src" / "coursekit", ignore=shutil.ignore_patterns("__pycache__"))
        # Its own coursekit first, then this environment's packages (their .pth files too).
        (layer / "coursekit-tests-layer.pth").write_text(f"{base / 'src'}\nimport site; site.addsitedir({site_packages!r})\n")
        for script in Path(sys.executable).parent.iterdir():  # console scripts (nbgrader calls `alembic`), re-pointed
            head = script.read_bytes()[:200] if script.is_file() and not script.is_symlink() else b""
            if head.startswith(b"#!") and b"python" in head.split(b"\n")[0]:
                body = script.read_text().split("\n", 1)[1]
                target = base / "venv" / "bin" / script.name
                target.write_text(f"#!{base / 'venv' / 'bin' / 'python'}\n{body}")
                target.chmod(0o755)
        (base / "home").mkdir()
        for path in [base, *base.rglob("*")]:
            os.lchown(path, uid, uid)
        os.chmod(base, 0o755)
        # Compiled now, so that later the copy changes only if something writes to it.
        as_user(uid, base / "home", str(base / "venv" / "bin" / "python"), "-m", "compileall", "-q", str(base / "src"),
                cwd=base).check_returncode()
        yield uid, base / "venv" / "bin" / "python", base / "home", base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_ordinary_user_gets_the_sandbox_with_its_own_process_limit(instructor):
    uid, python, home, base = instructor
    own = as_user(uid, home, str(python), "-c", "import coursekit; print(coursekit.__file__)", cwd=home)
    assert own.stdout.strip() == str(base / "src" / "coursekit" / "__init__.py"), own.stderr
    proc = as_user(uid, home, str(python), "-m", "coursekit.autograder.cli", "info", cwd=home)
    assert proc.returncode == 0, proc.stderr
    assert "processes limited by RLIMIT_NPROC in the sandbox's own user namespace" in proc.stdout, proc.stdout


def test_the_hostile_cohort_graded_by_an_ordinary_user(instructor):
    uid, python, home, base = instructor
    course = base / "course"
    secret = home / "secret.txt"
    listeners = hc.Listeners()
    targets = hc.Targets(course, secret, listeners.port, listeners.abstract)
    sleepers = []
    try:
        secret.write_text(targets.secret_text)
        hc.make_course(course, hc.attack_notebooks(targets))
        hc.plant_link(course, targets)
        for path in [secret, course, *course.rglob("*")]:
            os.lchown(path, uid, uid)
        os.chmod(secret, 0o600)  # the instructor's own file: readable by the instructor's processes, were it visible
        before = hc.fingerprint(base / "src" / "coursekit"), hc.fingerprint(course / "submitted")
        # The instructor has more processes than a sandbox may: a limit that counted them would allow no fork.
        sleepers += [subprocess.Popen(["sleep", "900"], user=uid, group=uid, extra_groups=[]) for _ in range(70)]
        proc = as_user(uid, home, str(python), "-m", "coursekit.autograder.cli", "grade", "sdpa", "--workers", "2",
                       "--memory-mb", "2048", "--max-processes", "64", "--cell-timeout", "30", cwd=course)
        processes, connections = hc.host_processes_with(targets.marker), listeners.connections()
    finally:
        listeners.close()
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with (course / "reports" / "sdpa" / "grades.csv").open() as handle:
        rows = {r["student"]: r for r in csv.DictReader(handle)}
    assert set(rows) == set(hc.EXPECTED)
    for student, (score, status, words) in hc.EXPECTED.items():
        row = rows[student]
        assert (row["score"], row["status"], row["isolation"]) == (f"{score:g}", status, "bwrap"), row
        assert words in row["detail"], row
    for student, outcomes in hc.OUTCOMES.items():
        printed = hc.outputs(course, student)
        assert all(printed.count(o) >= outcomes.count(o) for o in outcomes), printed
    assert 0 < hc.forks_started(hc.outputs(course, "fork-bomb")) < 64
    assert processes == [] and connections == 0
    assert (hc.fingerprint(base / "src" / "coursekit"), hc.fingerprint(course / "submitted")) == before
    assert all(owner == uid for owner in {p.stat().st_uid for p in (course / "reports").rglob("*")}), \
        "everything grading wrote belongs to the instructor who graded"
    for page in (course / "feedback").rglob("*.html"):
        text = page.read_text()
        assert not any(hidden in text for hidden in (*hc.HIDDEN, targets.secret_text)), page
