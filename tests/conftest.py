"""Shared fixtures: the repository root, a scratch nbgrader course built from the committed sources, and one torch
thread for the modules that train tiny models."""

import shutil
from pathlib import Path

import pytest
import torch

from coursekit.autograder.nbgrader_io import run_nbgrader

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and list(p.glob("*.ipynb")))


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
