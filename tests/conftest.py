"""Shared fixtures: the repository root, a scratch nbgrader course built from the committed sources, and one torch
thread for the modules that train tiny models."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from coursekit.autograder.bundle import build_wheel
from coursekit.autograder.nbgrader_io import run_nbgrader

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and list(p.glob("*.ipynb")))


# --- The book build, started as soon as the session knows it will need it ------------------------------------------
#
# Building the book (executing every chapter) takes minutes on one core, and the rest of the suite rarely keeps both
# cores busy; so when the book's tests are collected, the build starts in the background at once and those tests run
# last. tests/test_book.py waits for it.

BOOK_TESTS = ("test_book.py", "test_book_browser.py")
_book_build: dict[str, object] = {}


def book_build_command() -> list[str]:
    """The README's build (`make book`): warnings are errors (-W), references are checked (-n)."""
    return [str(Path(sys.executable).parent / "jupyter-book"), "build", "-W", "-n", "--keep-going", str(ROOT)]


def start_book_build() -> None:
    if "process" in _book_build:
        return
    from coursekit.autograder.nbgrader_io import nbgrader_env

    log = tempfile.TemporaryFile(mode="w+")
    _book_build.update(log=log, process=subprocess.Popen(book_build_command(), cwd=ROOT, env=nbgrader_env(),
                                                         stdout=log, stderr=subprocess.STDOUT, text=True))


def finish_book_build(timeout: float = 1800) -> subprocess.CompletedProcess:
    """Wait for the build (starting it if nothing did yet); its exit status and its output."""
    start_book_build()
    process = _book_build["process"]
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log = _book_build["log"]
    log.seek(0)
    return subprocess.CompletedProcess(process.args, process.returncode, log.read(), "")


def pytest_collection_modifyitems(session, config, items):
    book = [item for item in items if item.path.name in BOOK_TESTS]
    if book and not config.option.collectonly:
        items[:] = [item for item in items if item.path.name not in BOOK_TESTS] + book
        start_book_build()


def pytest_sessionfinish(session, exitstatus):
    process = _book_build.get("process")
    if process is not None and process.poll() is None:  # interrupted, or the book's tests were deselected later
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def scratch_course(tmp_path_factory) -> Path:
    """A copy of the course's nbgrader set-up where every assignment has been generated afresh.

    Tests grade here, never in the repository, so they neither need nor touch a real gradebook.
    """
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    for assignment in ASSIGNMENTS:
        run_nbgrader(course, "generate_assignment", assignment, "--force")
    return course


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread than on two, and do not fight other processes for cores.

    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the count is restored after it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def locked(path: Path) -> dict[str, list[tuple[str, str, frozenset[str]]]]:
    """{package: [(version, marker, hashes)]} of a hash-pinned lock (a package may fork by Python version)."""
    pins: dict[str, list[tuple[str, str, frozenset[str]]]] = {}
    pattern = r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)(?: ; ([^\\]+?))? \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)"
    for match in re.finditer(pattern, path.read_text(), flags=re.M):
        pins.setdefault(match.group(1).lower().replace("_", "-"), []).append(
            (match.group(2), match.group(3) or "", frozenset(re.findall(r"sha256:([0-9a-f]{64})", match.group(4)))))
    return pins


def run(*command, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command to completion; fail the test with its output when it exits non-zero."""
    proc = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, command))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def link_installed(distribution: str, venv: Path) -> None:
    """Put this environment's installed ``distribution`` into ``venv`` as it is, by hard links (its files and its
    .dist-info, so pip sees it as installed): the course's "install torch first" step, without unpacking torch's
    700 MB again. Hard links, not symbolic ones: the grading sandbox shows the new environment and nothing of
    this one."""
    from importlib.metadata import distribution as find

    installed = find(distribution)
    site = Path(installed.locate_file(""))
    target = next((venv / "lib").glob("python3*/site-packages"))
    tops = {Path(str(f)).parts[0] for f in installed.files or [] if not str(f).startswith("..")}
    for top in sorted(tops):
        if (site / top).is_dir() and not (target / top).exists():
            shutil.copytree(site / top, target / top, copy_function=os.link, ignore=shutil.ignore_patterns("__pycache__"))
        elif (site / top).is_file() and not (target / top).exists():
            os.link(site / top, target / top)


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtual environment as the README makes one: torch first, then coursekit's wheel with plain
    ``pip install`` (no --no-deps), so it holds coursekit's declared dependencies and nothing more.

    torch, which the README installs on its own before anything else, is linked in from the course environment
    (the same pinned release); everything else, torch's own dependencies included, pip resolves from coursekit's
    declared dependencies and installs. The lock's versions go in as plain constraints: they install nothing,
    they only keep the test from drifting with new releases on PyPI. pip's cache makes the installs local.
    """
    root = tmp_path_factory.mktemp("fresh-install")
    wheel = build_wheel(ROOT, root / "wheels")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    link_installed("pip", venv)
    link_installed("torch", venv)
    pins = root / "pins.txt"
    pins.write_text("\n".join(f"{name}=={version}" + (f" ; {marker}" if marker else "")
                              for name, forks in locked(ROOT / "requirements.txt").items()
                              for version, marker, _ in forks) + "\n")
    run(python, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check", "-c", pins, wheel)
    run(python, "-m", "pip", "check")
    return venv
