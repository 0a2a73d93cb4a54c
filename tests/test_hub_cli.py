"""`hub/course-hub`: bad input gets a clear error that says what to fix, and the trial cleans up after itself.

The error cases take seconds and need root (they create groups); the trial installs the course environment if
needed (like tests/test_hub.py), starts a hub on loopback, and is stopped with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT

if os.geteuid() != 0:
    pytest.skip("course-hub creates accounts and groups: run as root (CI does)", allow_module_level=True)

COURSE_HUB = ROOT / "hub" / "course-hub"
PREFIX = Path(os.environ.get("COURSEHUB_PREFIX", "/opt/coursehub"))


def course_hub(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(COURSE_HUB), *args], input=input, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def state():
    name = f"chc{uuid.uuid4().hex[:5]}"
    directory = Path(tempfile.mkdtemp(prefix=f"coursehub-{name}-"))
    empty_prefix = directory / "not-installed"
    empty_prefix.mkdir()
    proc = course_hub("init", "--state", str(directory / "state"), "--name", name, "--prefix", str(empty_prefix))
    assert proc.returncode == 0, proc.stderr
    yield directory / "state", name
    course_hub("destroy", "--state", str(directory / "state"))
    shutil.rmtree(directory, ignore_errors=True)


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_a_folder_that_is_no_hub_is_named(tmp_path):
    refused(course_hub("add-user", "--state", str(tmp_path), "ada"), "not a course hub's state directory",
            "course-hub init")


def test_bad_settings_are_refused_before_anything_is_made(tmp_path):
    refused(course_hub("init", "--state", str(tmp_path / "a"), "--name", "Course_Hub"), "cannot be an account name")
    refused(course_hub("init", "--state", str(tmp_path / "b"), "--learner-mem-limit", "lots"),
            "not an amount of memory", "2G")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_accounts_the_hub_did_not_make_are_left_alone(state):
    directory, name = state
    refused(course_hub("add-user", "--state", str(directory), "nobody"), "already exists", "--existing")
    refused(course_hub("add-user", "--state", str(directory), "Ada Lovelace"), "cannot be an account name")
    refused(course_hub("remove-user", "--state", str(directory), "nobody"), "not an account this hub created")
    assert pwd.getpwnam("nobody")


def test_a_learner_account_is_private_and_in_the_hub_group(state):
    directory, name = state
    user = f"{name}-ada"
    proc = course_hub("add-user", "--state", str(directory), user, "--password-stdin", "--home-base",
                      str(directory / "home"), input="a-password\n")
    assert proc.returncode == 0, proc.stderr
    account = pwd.getpwnam(user)
    assert Path(account.pw_dir).stat().st_mode & 0o777 == 0o700
    assert user in grp.getgrnam(f"{name}-learners").gr_mem
    refused(course_hub("run", "--state", str(directory), user, "--cwd", "/tmp", "--", "true"), "options such as --cwd")
    assert course_hub("remove-user", "--state", str(directory), user).returncode == 0
    with pytest.raises(KeyError):
        pwd.getpwnam(user)


def test_start_without_setup_says_what_to_run(state):
    directory, _ = state
    refused(course_hub("start", "--state", str(directory)), "not installed", "course-hub setup")


def test_setup_refuses_a_python_learners_could_not_run(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copy("/usr/bin/python3", private / "python3")
    refused(course_hub("setup", "--prefix", str(tmp_path / "prefix"), "--python", str(private / "python3")),
            "other users cannot reach", "/usr/bin/python3")
    assert not (tmp_path / "prefix").exists()


@pytest.mark.slow
def test_the_trial_serves_on_loopback_and_ctrl_c_removes_everything():
    if not Path("/usr/bin/python3").exists() or shutil.which("npm") is None:
        pytest.skip("the trial needs Debian's python3 and npm (see .ci/run)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = Path(tempfile.mkdtemp(prefix="coursehub-trial-test-"))
    trial = subprocess.Popen([str(COURSE_HUB), "trial", "--port", str(port), "--prefix", str(PREFIX), "--state", str(state)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 900
        while not (state / "private" / "jupyterhub.pid").exists():
            assert trial.poll() is None, trial.stdout.read()
            assert time.monotonic() < deadline, "the trial hub did not start"
            time.sleep(0.5)
        accounts = json.loads((state / "private" / "trial-accounts.json").read_text())
        assert set(accounts) == {"trial-teacher", "trial-ada", "trial-ben"}
        assert (state / "exchange" / "attention-transformers" / "outbound" / "sdpa" / "sdpa.ipynb").exists()
        import requests

        for _ in range(240):
            try:
                if requests.get(f"http://127.0.0.1:{port}/hub/api", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        session = requests.Session()
        session.get(f"http://127.0.0.1:{port}/hub/login", timeout=60)
        reply = session.post(f"http://127.0.0.1:{port}/hub/login", allow_redirects=False, timeout=60,
                             data={"username": "trial-ada", "password": accounts["trial-ada"],
                                   "_xsrf": session.cookies.get("_xsrf")})
        assert reply.status_code == 302, "the trial's learner could not log in with the printed password"
    finally:
        trial.send_signal(signal.SIGINT)
        output, _ = trial.communicate(timeout=180)
    assert trial.returncode == 0, output
    assert "http://127.0.0.1:" in output and "trial-ada" in output
    assert "trial removed" in output
    for name in accounts:
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    with pytest.raises(KeyError):
        grp.getgrnam("coursehub-trial-learners")
    assert not state.exists()
