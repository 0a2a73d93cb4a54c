"""The course hub end to end, on loopback, with real accounts, real processes and a real browser; no mocks.

One cohort goes through a whole assignment: ``hub/course-hub`` installs the course environment (when it is not
already installed), creates a hub with an instructor and four learners, and starts JupyterHub. The instructor
releases ``sdpa``; learners log in through the hub's REST API and through Chromium, fetch it and open it.

- ada submits a planted mistake, then the reference answers (she submitted twice: the latest counts);
- ben, in the browser, fetches and opens the notebook; he submits a planted mistake after the deadline
  (nbgrader's late penalty);
- cleo submits nothing, and her server runs out of memory (her kernel is killed and she is told why; nobody
  else notices);
- dan is hostile: he submits under ada's name, and back-dates a late submission of his own.

The instructor collects, grades with ``coursekit grade``, releases feedback; each learner fetches their own and
cannot read anyone else's. Stopping the hub leaves no process, cgroup or account behind.

Needs root (accounts, cgroups), Debian's Chromium and Playwright, and the registries for the first set-up (the
environment lands in ``$COURSEHUB_PREFIX``, default /opt/coursehub, and is reused while nothing it depends on
changes). Set ``COURSE_SCREENSHOTS=<dir>`` to keep the browser's screenshots.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

if os.geteuid() != 0:
    pytest.skip("the course hub test creates local accounts and cgroups: run it as root (CI does)", allow_module_level=True)
requests = pytest.importorskip("requests")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
CHROMIUM = os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)", allow_module_level=True)

sys.path.insert(0, str(ROOT / "hub"))
from coursehub import cgroups  # noqa: E402  (standard library only, like the hub's command line)

COURSE_HUB = ROOT / "hub" / "course-hub"
PREFIX = Path(os.environ.get("COURSEHUB_PREFIX", "/opt/coursehub"))
COURSE = "attention-transformers"
ASSIGNMENT = "sdpa"
LEARNER_MEMORY, LEARNER_CPUS = "1G", 1.0
TIMINGS: dict[str, float] = {}


# ---------------------------------------------------------------------------------------------------------
# The notebooks learners hand in
# ---------------------------------------------------------------------------------------------------------

def _source_answer() -> str:
    source = json.loads((ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
    cell = next(c for c in source["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "sdpa-answer")
    lines = "".join(cell["source"]).splitlines()
    return "\n".join(line for line in lines if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)


REFERENCE = _source_answer()
UNSCALED = REFERENCE.replace(" / math.sqrt(d_k)", "")  # the planted mistake: scores are not scaled
assert UNSCALED != REFERENCE


def answered(release: dict, code: str) -> dict:
    nb = json.loads(json.dumps(release))
    for cell in nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id == "sdpa-answer":
            cell["source"] = code
        elif grade_id == "written-answer":
            cell["source"] = "Dot products of d_k unit-variance entries have variance d_k; dividing keeps softmax unsaturated."
    return nb


# ---------------------------------------------------------------------------------------------------------
# Talking to the hub as its users do
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Account:
    name: str
    password: str
    token: str = ""
    spawn_seconds: float = 0.0
    home: Path = field(default_factory=Path)


class Hub:
    """A running hub: its state directory, its URL, and the accounts the test made."""

    def __init__(self, state: Path, name: str, port: int) -> None:
        self.state, self.name, self.port = state, name, port
        self.url = f"http://127.0.0.1:{port}"
        self.accounts: dict[str, Account] = {}
        self.process: subprocess.Popen | None = None

    def user(self, short: str) -> str:
        return f"{self.name}-{short}"

    def cli(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(COURSE_HUB), *args], input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"course-hub {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def run_as(self, short: str, *command: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """A command as one of the accounts, with their server's environment (as in a JupyterLab terminal)."""
        extra = ["--cwd", str(cwd)] if cwd else []
        return self.cli("run", "--state", str(self.state), *extra, self.user(short), "--", *command, check=check)

    @property
    def course_dir(self) -> Path:
        return self.accounts["teach"].home / COURSE

    def instructor(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run_as("teach", *command, cwd=self.course_dir, check=check)

    # -- the REST API ------------------------------------------------------------------------------------------
    def token_for(self, short: str) -> str:
        """Log in with the form (as a browser does: the first login creates the hub user), then ask for a token."""
        account = self.accounts[short]
        session = requests.Session()
        session.get(f"{self.url}/hub/login", timeout=60)
        reply = session.post(f"{self.url}/hub/login", timeout=60, allow_redirects=False,
                             data={"username": account.name, "password": account.password,
                                   "_xsrf": session.cookies.get("_xsrf")})
        assert reply.status_code == 302, f"{account.name} could not log in: {reply.status_code}"
        reply = requests.post(f"{self.url}/hub/api/users/{account.name}/tokens", timeout=60,
                              json={"auth": {"username": account.name, "password": account.password}})
        assert reply.status_code == 201, reply.text
        account.token = reply.json()["token"]
        return account.token

    def api(self, short: str, method: str, path: str, **kwargs) -> requests.Response:
        """``path`` under the hub (``/hub/api/...``) or under the user's server (``/user/<name>/...``)."""
        account = self.accounts[short]
        path = path.replace("{user}", account.name)
        return requests.request(method, f"{self.url}{path}", timeout=180,
                                headers={"Authorization": f"token {account.token}"}, **kwargs)

    def start_server(self, short: str) -> None:
        reply = self.api(short, "POST", "/hub/api/users/{user}/server")
        assert reply.status_code in (201, 202), reply.text

    def wait_ready(self, short: str, since: float, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api(short, "GET", "/hub/api/users/{user}").json()
            server = model["servers"].get("")
            if server and server["ready"]:
                self.accounts[short].spawn_seconds = time.monotonic() - since
                return self.accounts[short].spawn_seconds
            assert server and server.get("pending"), f"the server of {short} stopped while starting: {model}"
            time.sleep(0.5)
        raise AssertionError(f"the server of {short} was not ready after {timeout} s; see {self.state}/hub.log")

    def assignments(self, short: str, action: str | None = None) -> list[dict]:
        """nbgrader's Assignments list of a learner's server (what its Fetch/Submit buttons call)."""
        query = {"course_id": COURSE, "assignment_id": ASSIGNMENT}
        if action is None:
            reply = self.api(short, "GET", "/user/{user}/assignments", params={"course_id": COURSE})
        else:
            reply = self.api(short, "POST", f"/user/{{user}}/assignments/{action}", data=query)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["success"], body
        return body["value"]

    def contents(self, short: str, path: str):
        reply = self.api(short, "GET", f"/user/{{user}}/api/contents/{path}")
        assert reply.status_code == 200, reply.text
        return reply.json()["content"]

    def write_notebook(self, short: str, path: str, nb: dict) -> None:
        reply = self.api(short, "PUT", f"/user/{{user}}/api/contents/{path}",
                         json={"type": "notebook", "format": "json", "content": nb})
        assert reply.status_code in (200, 201), reply.text

    def cgroup(self, short: str) -> cgroups.ServerCgroup:
        cgroup = cgroups.existing(self.name, self.user(short))
        assert cgroup is not None, f"no cgroup for {short}'s server"
        return cgroup

    def run_code(self, short: str, code: str, timeout: float = 180) -> dict:
        """Run ``code`` in a fresh kernel of the learner's server over the kernel websocket (as JupyterLab does)."""
        reply = self.api(short, "POST", "/user/{user}/api/kernels", json={"name": "python3"})
        assert reply.status_code == 201, reply.text
        kernel = reply.json()["id"]
        url = f"ws://127.0.0.1:{self.port}/user/{self.accounts[short].name}/api/kernels/{kernel}/channels"
        try:  # in a thread of its own: Playwright's synchronous API keeps an event loop running in this one
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, _execute(url, self.accounts[short].token, code, timeout)).result()
        finally:
            self.api(short, "DELETE", f"/user/{{user}}/api/kernels/{kernel}")


async def _execute(url: str, token: str, code: str, timeout: float) -> dict:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    msg_id, outcome = uuid.uuid4().hex, {"stdout": "", "stderr": "", "error": None, "states": []}
    message = {"header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                          "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
               "parent_header": {}, "metadata": {}, "channel": "shell",
               "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                           "allow_stdin": False, "stop_on_error": True}}
    await connection.write_message(json.dumps(message))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(connection.read_message(), timeout=max(1.0, deadline - time.monotonic()))
            if raw is None:
                break
            reply = json.loads(raw)
            kind, content = reply.get("msg_type"), reply.get("content", {})
            if kind == "status":
                outcome["states"].append(content.get("execution_state"))
                if content.get("execution_state") in ("restarting", "autorestarting", "dead"):
                    return outcome
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if kind == "stream":
                outcome[content["name"]] += content["text"]
            elif kind == "error":
                outcome["error"] = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content.get("execution_state") == "idle":
                return outcome
        raise AssertionError(f"no answer from the kernel in {timeout} s: {outcome}")
    finally:
        connection.close()


def _free_ports(count: int = 3) -> int:
    """A port p with p .. p+count-1 all free on loopback (the proxy, the hub's API, the proxy's API)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            sockets = []
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no three consecutive free ports on loopback")


# ---------------------------------------------------------------------------------------------------------
# The hub, and the course as it happens
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub():
    started = time.monotonic()
    setup = subprocess.run([str(COURSE_HUB), "setup", "--prefix", str(PREFIX)], capture_output=True, text=True, timeout=1200)
    assert setup.returncode == 0, f"course-hub setup failed:\n{setup.stdout}\n{setup.stderr}"
    TIMINGS["setup (s)"] = time.monotonic() - started

    name = f"cht{uuid.uuid4().hex[:5]}"
    state = Path(tempfile.mkdtemp(prefix=f"coursehub-{name}-", dir="/tmp"))
    os.chmod(state, 0o755)
    hub = Hub(state, name, _free_ports())
    try:
        hub.cli("init", "--state", str(state), "--name", name, "--prefix", str(PREFIX), "--port", str(hub.port),
                "--learner-mem-limit", LEARNER_MEMORY, "--learner-cpu-limit", str(LEARNER_CPUS), "--idle-cull-seconds", "0")
        for short, role in (("teach", "instructor"), ("ada", "learner"), ("ben", "learner"), ("cleo", "learner"),
                            ("dan", "learner")):
            password = f"pw-{uuid.uuid4().hex[:10]}"
            hub.cli("add-user", "--state", str(state), hub.user(short), "--password-stdin", "--home-base",
                    str(state / "home"), *(["--instructor"] if role == "instructor" else []), input=password + "\n")
            hub.accounts[short] = Account(hub.user(short), password, home=Path(pwd.getpwnam(hub.user(short)).pw_dir))
        started = time.monotonic()
        hub.process = subprocess.Popen([str(COURSE_HUB), "start", "--state", str(state), "--log", str(state / "hub.log")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            assert hub.process.poll() is None, f"the hub exited with {hub.process.returncode}: see {state}/hub.log"
            try:
                if requests.get(f"{hub.url}/hub/api", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the hub did not answer within 120 s"
            time.sleep(0.2)
        TIMINGS["hub start (s)"] = time.monotonic() - started
        yield hub
    finally:
        _stop(hub)
        subprocess.run([str(COURSE_HUB), "destroy", "--state", str(state)], capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def _stop(hub: Hub) -> None:
    if hub.process is not None and hub.process.poll() is None:
        hub.process.send_signal(signal.SIGTERM)
        try:
            hub.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            hub.process.kill()
            hub.process.wait()


@pytest.fixture(scope="module")
def released(hub):
    """The instructor generates sdpa into the gradebook, imports the roster, sets a due date well ahead, releases."""
    started = time.monotonic()
    due = datetime.now(timezone.utc).replace(microsecond=0)
    roster = "\\n".join(["id,last_name", *(f"{hub.user(s)},{s.title()}" for s in ("ada", "ben", "cleo", "dan"))])
    hub.instructor("bash", "-c", f"set -e; printf '{roster}\\n' > roster.csv; nbgrader db student import roster.csv; "
                                 f"nbgrader generate_assignment {ASSIGNMENT} --force; "
                                 f"nbgrader db assignment add {ASSIGNMENT} --duedate='{due.year + 1}-01-01 00:00:00 UTC'; "
                                 f"nbgrader release_assignment {ASSIGNMENT}")
    TIMINGS["release (s)"] = time.monotonic() - started
    TIMINGS["round trip start"] = started
    return hub


@pytest.fixture(scope="module")
def servers(released):
    """ada, ben and cleo start their servers at once, through the REST API (ben's is used from the browser)."""
    hub = released
    for short in ("ada", "ben", "cleo"):
        hub.token_for(short)
    started = time.monotonic()
    for short in ("ada", "ben", "cleo"):
        hub.start_server(short)
    for short in ("ada", "ben", "cleo"):
        hub.wait_ready(short, started)
    TIMINGS["three servers spawned together (s)"] = time.monotonic() - started
    return hub


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-default-apps"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    directory = Path(os.environ.get("COURSE_SCREENSHOTS") or tmp_path_factory.mktemp("hub-screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _log_in(page, hub: Hub, short: str, password: str | None = None) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", hub.user(short))
    page.fill("#password_input", password or hub.accounts[short].password)
    page.click("#login_submit")


def _run_cell(page, code: str, wait_for: str, screenshots: Path) -> None:
    """Type ``code`` into the notebook's last cell, run it, and wait for the selector ``wait_for``.

    JupyterLab drops a run asked for while it is still connecting to a new kernel (the cell keeps an empty
    prompt, ``[ ]:``); such a cell is run again, as a learner would press Shift+Enter again."""
    try:
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=240_000)
        page.locator(".jp-Notebook .jp-Cell .cm-content").last.click()
        page.keyboard.type(code)
        page.keyboard.press("Shift+Enter")
        cell = page.locator(".jp-Notebook .jp-CodeCell", has_text=code).last
        for attempt in range(4):
            try:
                page.wait_for_selector(wait_for, timeout=60_000)
                return
            except sync_api.TimeoutError:
                if attempt == 3:
                    raise
                if re.fullmatch(r"\[\s*\]:?", cell.locator(".jp-InputPrompt").inner_text().strip()):
                    cell.locator(".cm-content").click()
                    page.keyboard.press("Control+Enter")
    except Exception:
        page.screenshot(path=str(screenshots / "hub-failed-cell.png"))
        raise


def _open_lab(page, hub: Hub, short: str) -> None:
    _log_in(page, hub, short)
    page.wait_for_selector(".jp-LabShell", timeout=180_000)
    page.wait_for_selector(".jp-DirListing-content", timeout=180_000)


@pytest.fixture(scope="module")
def ben_in_the_browser(servers, browser, screenshots):
    """ben logs in with a wrong password, then his own; fetches sdpa from the Assignments list and opens it."""
    hub = servers
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    seen = {}
    try:
        _log_in(page, hub, "ben", password="not-his-password")
        page.wait_for_selector(".login_error", timeout=60_000)
        seen["wrong password"] = page.inner_text(".login_error")
        page.screenshot(path=str(screenshots / "hub-wrong-password.png"))
        _open_lab(page, hub, "ben")
        page.click("text=Nbgrader")
        page.locator(".lm-Menu-itemLabel", has_text="Assignment List").click()
        fetch = page.locator("#released_assignments_list button", has_text="Fetch")
        fetch.wait_for(timeout=120_000)
        seen["menu"] = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
        fetch.click()
        page.wait_for_selector(f"#fetched_assignments_list >> text={ASSIGNMENT}", timeout=120_000)
        page.screenshot(path=str(screenshots / "hub-assignments.png"))
        links = page.locator(f"#fetched_assignments_list a:text-is('{ASSIGNMENT}')")
        links.first.click()  # the assignment: shows its notebooks
        links.last.wait_for(state="visible", timeout=60_000)
        links.last.click()  # the notebook: opens it in JupyterLab
        page.wait_for_selector(".jp-Notebook >> text=YOUR CODE HERE", timeout=120_000)
        page.wait_for_selector(".jp-Notebook mjx-container", timeout=60_000)  # the formula, typeset offline
        seen["notebook"] = page.locator(".jp-Notebook").inner_text()
        page.screenshot(path=str(screenshots / "hub-notebook.png"))
    finally:
        context.close()
    return seen


@pytest.fixture(scope="module")
def submitted(servers, ben_in_the_browser):
    """ada submits twice, the deadline passes, ben submits late, dan forges; cleo hands in nothing."""
    hub = servers
    assert [a["status"] for a in hub.assignments("ada")] == ["released"]
    assert hub.assignments("ada", "fetch")[0]["status"] == "fetched"
    release = hub.contents("ada", f"{ASSIGNMENT}/{ASSIGNMENT}.ipynb")
    hub.write_notebook("ada", f"{ASSIGNMENT}/{ASSIGNMENT}.ipynb", answered(release, UNSCALED))
    hub.assignments("ada", "submit")
    time.sleep(1.1)  # nbgrader's timestamps order submissions
    hub.write_notebook("ada", f"{ASSIGNMENT}/{ASSIGNMENT}.ipynb", answered(release, REFERENCE))
    ada_listing = hub.assignments("ada", "submit")

    # The deadline passes: the instructor moves the due date to now.
    due = datetime.now(timezone.utc)
    hub.instructor("nbgrader", "db", "assignment", "add", ASSIGNMENT, f"--duedate={due:%Y-%m-%d %H:%M:%S.%f} UTC")
    time.sleep(1.1)
    hub.write_notebook("ben", f"{ASSIGNMENT}/{ASSIGNMENT}.ipynb", answered(release, UNSCALED))
    ben_listing = hub.assignments("ben", "submit")

    # dan, from a terminal: a blank notebook submitted as ada, and his own copy of the reference answers in a
    # submission he makes by hand with a timestamp a year before the deadline.
    hub.run_as("dan", "nbgrader", "fetch_assignment", ASSIGNMENT)
    hub.run_as("dan", "nbgrader", "submit", ASSIGNMENT, f"--student={hub.user('ada')}")
    forged = (f"import json, os, shutil; p = {str(hub.state / 'exchange' / COURSE / 'inbound')!r} + "
              f"'/{hub.user('dan')}+{ASSIGNMENT}+{due.year - 1}-01-01 00:00:00.000000 UTC+forged'; os.mkdir(p); "
              f"json.dump(json.loads({json.dumps(json.dumps(answered(release, REFERENCE)))}), "
              f"open(p + '/{ASSIGNMENT}.ipynb', 'w')); open(p + '/timestamp.txt', 'w').write("
              f"'{due.year - 1}-01-01 00:00:00.000000 UTC')")
    hub.run_as("dan", "python", "-c", forged)
    return {"ada": ada_listing, "ben": ben_listing, "due": due}


@pytest.fixture(scope="module")
def graded(submitted, hub):
    """The instructor collects, runs `coursekit grade`, exports the gradebook and releases feedback."""
    collect = hub.instructor("nbgrader", "collect", ASSIGNMENT)
    started = time.monotonic()
    grade = hub.instructor("coursekit", "grade", ASSIGNMENT, "--workers", "2", "--memory-mb", "2048")
    TIMINGS["coursekit grade, 3 submissions (s)"] = time.monotonic() - started
    hub.instructor("coursekit", "export")
    hub.instructor("coursekit", "report", ASSIGNMENT)
    # Feedback after hand grading; nobody grades the written answers here, so they go out pending.
    hub.instructor("coursekit", "feedback", ASSIGNMENT, "--pending-ok")
    hub.instructor("nbgrader", "release_feedback", ASSIGNMENT)
    with (hub.course_dir / "reports" / ASSIGNMENT / "grades.csv").open() as handle:
        grades = {row["student"]: row for row in csv.DictReader(handle)}
    with (hub.course_dir / "reports" / "gradebook.csv").open() as handle:
        export = {row["student_id"]: row for row in csv.DictReader(handle)}
    return {"collect": collect.stdout + collect.stderr, "grade": grade.stdout, "grades": grades, "export": export}


@pytest.fixture(scope="module")
def feedback(graded, hub):
    """ada and ben press "Fetch Feedback" (the REST call behind it) and read what arrived, through their servers."""
    fetched = {}
    for short in ("ada", "ben"):
        hub.assignments(short, "fetch_feedback")
        fetched[short] = {}
        for folder in hub.contents(short, f"{ASSIGNMENT}/feedback"):
            for item in hub.contents(short, folder["path"]):
                reply = hub.api(short, "GET", f"/user/{{user}}/api/contents/{item['path']}", params={"format": "text"})
                fetched[short][item["path"]] = reply.json()["content"]
    TIMINGS["round trip: release to feedback fetched (s)"] = time.monotonic() - TIMINGS.pop("round trip start")
    return fetched


# ---------------------------------------------------------------------------------------------------------
# What each person sees
# ---------------------------------------------------------------------------------------------------------

def test_a_wrong_password_is_refused_clearly(servers, ben_in_the_browser):
    hub = servers
    assert ben_in_the_browser["wrong password"].strip() == "Invalid username or password"
    reply = requests.post(f"{hub.url}/hub/api/users/{hub.user('ada')}/tokens", timeout=60,
                          json={"auth": {"username": hub.user("ada"), "password": "guess"}})
    assert reply.status_code == 403
    outsider = requests.post(f"{hub.url}/hub/api/users/root/tokens", timeout=60,
                             json={"auth": {"username": "root", "password": "guess"}})
    assert outsider.status_code == 403


def test_each_server_runs_as_its_learner_inside_its_own_limits(servers):
    hub = servers
    for short in ("ada", "ben", "cleo"):
        cgroup = hub.cgroup(short)
        pids = cgroup.pids()
        assert pids, f"{short}'s server is not in its cgroup"
        owners = {Path(f"/proc/{pid}").stat().st_uid for pid in pids if Path(f"/proc/{pid}").exists()}
        assert owners == {pwd.getpwnam(hub.user(short)).pw_uid}, f"{short}'s cgroup holds processes of {owners}"
        assert cgroup.memory_limit() == 2**30
        assert cgroup.cpu_quota() == pytest.approx(LEARNER_CPUS)


def test_learner_fetches_and_opens_the_notebook_in_the_browser(ben_in_the_browser):
    seen = ben_in_the_browser
    assert "Nbgrader" in seen["menu"]
    assert "scaled_dot_product_attention" in seen["notebook"] and "YOUR CODE HERE" in seen["notebook"]


def test_learners_do_not_get_the_instructor_tools(servers):
    hub = servers
    reply = hub.api("ada", "GET", "/user/{user}/formgrader")
    assert reply.status_code == 404


def test_a_cpu_limit_binds_a_busy_learner(servers):
    """Two busy processes in ada's kernel get no more CPU time than her cgroup's quota, and the kernel's CFS
    bandwidth controller records that it throttled them.

    The quota is tightened to a fifth of a core for the run (through the same call the spawner uses): at the
    configured one core a heavily loaded machine may never let two processes reach the quota, and then
    nothing would show that it binds."""
    hub = servers
    cgroup = hub.cgroup("ada")
    before = cgroup.throttled()
    cgroup.apply(cgroups.Limits(cpus=0.2))
    try:
        outcome = hub.run_code("ada", (
            "import json, multiprocessing as mp, os, time\n"
            "def burn(seconds):\n"
            "    end = time.time() + seconds\n"
            "    while time.time() < end:\n"
            "        pass\n"
            "workers = [mp.get_context('fork').Process(target=burn, args=(3,)) for _ in range(2)]\n"
            "start, t0 = time.time(), os.times()\n"
            "[w.start() for w in workers]; [w.join() for w in workers]\n"
            "t1 = os.times()\n"
            "print(json.dumps({'wall': time.time() - start, 'cpu': t1.children_user + t1.children_system"
            " - t0.children_user - t0.children_system}))\n"))
    finally:
        cgroup.apply(cgroups.Limits(cpus=LEARNER_CPUS))
    assert outcome["error"] is None, outcome
    used = json.loads(outcome["stdout"].strip().splitlines()[-1])
    assert used["cpu"] <= 0.2 * used["wall"] * 1.25 + 0.1, used
    assert cgroup.throttled() > before, "the cgroup was never throttled: the CPU limit did not bind"
    assert cgroup.cpu_quota() == pytest.approx(LEARNER_CPUS)


def test_running_out_of_memory_is_explained_and_touches_nobody_else(servers, browser, screenshots):
    """cleo's kernel asks for 3 GiB under a 1 GiB limit: the kernel is killed, JupyterLab says so, the next
    cell says why; her server, ada's kernel and the hub carry on."""
    hub = servers
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        _open_lab(page, hub, "cleo")
        page.locator(".jp-LauncherCard[title*='Python 3']").first.click()
        _run_cell(page, "print('ready', 6 * 7)", ".jp-OutputArea >> text=ready 42", screenshots)
        _run_cell(page, "hog = bytearray(3 * 1024**3)", ".jp-Dialog", screenshots)
        dialog = page.locator(".jp-Dialog").inner_text()
        page.screenshot(path=str(screenshots / "hub-out-of-memory.png"))
        page.locator(".jp-Dialog button", has_text="Ok").click()
        assert hub.cgroup("cleo").oom_kills() >= 1
        # ada, meanwhile: her kernel computes, her server answers, and nothing of hers was killed.
        assert hub.run_code("ada", "print(6 * 7)")["stdout"].strip() == "42"
        assert hub.cgroup("ada").oom_kills() == 0
        assert requests.get(f"{hub.url}/hub/api", timeout=30).status_code == 200
        # cleo's server survived; the restarted kernel explains in the next cell she runs.
        assert hub.api("cleo", "GET", "/user/{user}/api/status").status_code == 200
        _run_cell(page, "print('after', 6 * 7)", ".jp-OutputArea >> text=after 42", screenshots)
        explained = page.locator(".jp-Notebook").inner_text()
        page.screenshot(path=str(screenshots / "hub-out-of-memory-explained.png"))
    finally:
        context.close()
    assert "appears to have died" in dialog
    assert "ran out of memory (1.0 GiB)" in explained, explained[-1500:]


def test_submitting_twice_keeps_both_and_the_latest_counts(hub, submitted, graded):
    (entry,) = [a for a in submitted["ada"] if a["status"] == "submitted"]
    assert len(entry["submissions"]) == 2, entry  # her Assignments list shows both, with their times
    ada = graded["grades"][hub.user("ada")]
    assert (ada["score"], ada["max_score"], ada["status"]) == ("10", "10", "graded"), ada
    assert "all tests passed" in ada["detail"]


def test_the_planted_mistake_is_graded_and_named(hub, graded):
    ben = graded["grades"][hub.user("ben")]
    # 5 points earned, all taken by nbgrader's late penalty ('zero'): grades.csv gives what the formgrader gives
    assert (ben["score"], ben["status"], ben["codes"]) == ("0", "graded", "sdpa.unscaled"), ben
    assert "with no scaling" in ben["detail"] and "late: 5 points off" in ben["detail"]


def test_a_late_submission_gets_nbgraders_late_penalty(hub, graded):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{hub.course_dir / 'gradebook.db'}") as gradebook:
        late = {s: gradebook.find_submission(ASSIGNMENT, hub.user(s)) for s in ("ada", "ben", "dan")}
        seconds = {s: sub.total_seconds_late for s, sub in late.items()}
        penalty = {s: sub.late_submission_penalty for s, sub in late.items()}
        score = {s: sub.score for s, sub in late.items()}
    assert seconds["ada"] == 0 and penalty["ada"] == 0
    assert seconds["ben"] > 0, "ben submitted after the due date"
    assert penalty["ben"] == score["ben"] == 5, "nbgrader's 'zero' penalty takes every point of a late submission"


def test_a_learner_without_a_submission_is_reported_as_such(hub, graded):
    assert hub.user("cleo") not in graded["grades"]
    cleo = graded["export"][hub.user("cleo")]
    assert cleo[ASSIGNMENT] == "" and "no submission" in cleo["notes"], cleo


def test_a_submission_under_someone_elses_name_is_refused(hub, graded):
    assert re.search(rf"Refused .*{hub.user('ada')}\+{ASSIGNMENT}.*{hub.user('dan')} submitted it", graded["collect"]), \
        graded["collect"]
    collected = json.loads((hub.course_dir / "submitted" / hub.user("ada") / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
    assert "math.sqrt(d_k)" in "".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                                       for c in collected["cells"]), "ada's own submission must be the one collected"


def test_a_back_dated_submission_is_dated_by_its_last_change(hub, submitted, graded):
    from nbgrader.api import Gradebook

    stamp = (hub.course_dir / "submitted" / hub.user("dan") / ASSIGNMENT / "timestamp.txt").read_text()
    assert not stamp.startswith(str(submitted["due"].year - 1)), stamp
    with Gradebook(f"sqlite:///{hub.course_dir / 'gradebook.db'}") as gradebook:
        assert gradebook.find_submission(ASSIGNMENT, hub.user("dan")).total_seconds_late > 0
    assert "dated by the change" in graded["collect"]


def test_each_learner_fetches_their_own_feedback(hub, feedback):
    (ada,), (ben,) = feedback["ada"].values(), feedback["ben"].values()
    assert "(Score: 10.0 / 12.0)" in ada and "Late submission penalty" not in ada and "with no scaling" not in ada
    # ben's own: the mistake named, and the late penalty taking his five points
    assert "with no scaling" in ben
    assert "(Score: 0.0 / 12.0)" in ben and "Late submission penalty (Score: -5.0)" in ben


def test_no_learner_can_read_another_learners_work(hub, feedback):
    exchange = hub.state / "exchange" / COURSE
    attempts = {
        "list the submissions": ["ls", str(exchange / "inbound")],
        "list the released feedback": ["ls", str(exchange / "feedback")],
        "read ada's notebook": ["cat", str(hub.accounts["ada"].home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")],
        "read ada's feedback": ["ls", "-R", str(hub.accounts["ada"].home / ASSIGNMENT / "feedback")],
        "read the collected submissions": ["ls", str(hub.course_dir / "submitted")],
        "read the gradebook": ["cat", str(hub.course_dir / "gradebook.db")],
        "read the hidden tests": ["cat", str(hub.course_dir / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")],
        "rename the course in the exchange": ["mv", str(exchange), str(exchange) + "-mine"],
    }
    for what, command in attempts.items():
        attempt = hub.run_as("ben", *command, check=False)
        said = attempt.stderr + attempt.stdout
        assert attempt.returncode != 0 and ("Permission denied" in said or "Operation not permitted" in said), \
            f"ben could {what}: {said[:300]}"


def test_stopping_the_hub_leaves_nothing_running(hub, feedback, capsys):
    uids = {pwd.getpwnam(a.name).pw_uid for a in hub.accounts.values()}
    servers = [cgroups.existing(hub.name, hub.user(s)) for s in ("ada", "ben", "cleo")]
    started = time.monotonic()
    hub.process.send_signal(signal.SIGTERM)
    assert hub.process.wait(timeout=120) == 0
    TIMINGS["hub stop (s)"] = time.monotonic() - started
    left = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _uid(p) in uids]
    assert not left, f"processes of the hub's users still run: {left}"
    assert all(not d.exists() for s in servers if s for d in s.directories), "a server's cgroup was left behind"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", hub.port)) != 0, "the proxy still listens"
    hub.cli("destroy", "--state", str(hub.state))
    for account in hub.accounts.values():
        with pytest.raises(KeyError):
            pwd.getpwnam(account.name)
    assert not hub.state.exists()
    with capsys.disabled():
        print("\ncourse hub timings (this machine, under its current load): "
              + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items())
              + "; spawn (s): " + ", ".join(f"{s} {a.spawn_seconds:.1f}" for s, a in hub.accounts.items() if a.spawn_seconds))


def _uid(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None
