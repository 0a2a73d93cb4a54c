"""A cohort of sdpa submissions that attack the grader, one attack each, and what each deserves.

Shared by the autograder's tests (the cohort graded as the user running the tests, and as an unprivileged
user). Every attack is aimed at the real thing: the absolute paths of the course's gradebook, solutions and
other students' work, a secret file outside the course, the real ``coursekit`` package the grader imports,
a listener on the host's loopback. Each prints ``ATTACK <name>: <what happened>`` so a test can check why it
failed, not only that it did.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT
from tests.helpers import SDPA_SUBMISSIONS

REFERENCE, UNSCALED = SDPA_SUBMISSIONS["reference"], SDPA_SUBMISSIONS["unscaled"]
# What grading must never show a learner: the hidden tests and the instructor's answers from solutions/.
HIDDEN = ("# fresh random inputs", "for _ in range(3)", "HIDDEN TESTS", "BEGIN SOLUTION",
          "If the entries of a query and a key are independent")

PATCH_CHECKS = """
import numpy, torch, coursekit.attention, coursekit.grading
torch.allclose = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
numpy.allclose = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
coursekit.attention.scaled_dot_product_attention = scaled_dot_product_attention
for name in dir(coursekit.grading):
    if name.startswith("check_"):
        setattr(coursekit.grading, name, lambda *a, **k: None)
grading = coursekit.grading
"""


def release() -> dict:
    return json.loads((ROOT / "exercises" / "sdpa" / "sdpa.ipynb").read_text())


def cell(nb: dict, grade_id: str) -> dict:
    return next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def answered(code: str) -> dict:
    nb = release()
    cell(nb, "sdpa-answer")["source"] = code
    return nb


@dataclass
class Targets:
    """What the attacks aim at, on this run's machine."""

    course: Path
    secret: Path  # a file of the instructor's, outside the course
    port: int  # a TCP listener on the host's loopback
    abstract: str  # an abstract unix socket on the host
    marker: str = field(default_factory=lambda: f"{uuid.uuid4().int % 10**8}.5")  # in lingering processes' argv

    @property
    def secret_text(self) -> str:
        return f"INSTRUCTOR-SECRET-{self.marker}"


def tamper(t: Targets) -> str:
    return f"""
import importlib.util, os
path = importlib.util.find_spec("coursekit.grading").origin
noop = "\\nfor _name in list(globals()):\\n    if _name.startswith('check_'):\\n        globals()[_name] = lambda *a, **k: None\\n"
for target in [path, os.path.join(os.path.dirname(path), "core.py")]:
    try:
        with open(target, "a") as handle:
            handle.write(noop)
        print("ATTACK tamper: wrote", target)
    except OSError as err:
        print("ATTACK tamper: refused", err.strerror)
try:
    open(os.path.join(os.path.dirname(importlib.util.find_spec("torch").origin), "..", "sitecustomize.py"), "w").write("x")
    print("ATTACK tamper: wrote sitecustomize")
except OSError as err:
    print("ATTACK tamper: refused", err.strerror)
"""


def vandal(t: Targets) -> str:
    gradebook = t.course / "gradebook.db"
    other = t.course / "submitted" / "reference" / "sdpa" / "sdpa.ipynb"
    staged = t.course / "reports" / "sdpa" / ".staging" / "reference" / "sdpa" / "sdpa.ipynb"
    return f"""
import os, sqlite3
try:
    db = sqlite3.connect("file:{gradebook}?mode=rw", uri=True)
    db.execute("UPDATE grade SET auto_score = 0")
    db.commit()
    print("ATTACK vandal: zeroed the gradebook")
except Exception as err:
    print("ATTACK vandal: gradebook", type(err).__name__, err)
for target in [{str(other)!r}, {str(staged)!r}, {str(t.course / 'reports' / 'sdpa' / 'grades.csv')!r},
               {str(t.course / 'feedback' / 'reference' / 'sdpa' / 'sdpa.html')!r}]:
    try:
        open(target, "w").write("{{}}")
        print("ATTACK vandal: overwrote", target)
    except OSError as err:
        print("ATTACK vandal: refused", err.strerror)
"""


def leak(t: Targets) -> str:
    return f"""
for target in [{str(t.course / 'solutions' / 'sdpa' / 'sdpa.ipynb')!r}, {str(t.secret)!r}, "secret-link.txt"]:
    try:
        print("ATTACK leak:", open(target).read())
    except OSError as err:
        print("ATTACK leak: refused", err.strerror)
"""


def linger(t: Targets) -> str:
    grades = t.course / "reports" / "sdpa" / "grades.csv"
    later = (f"import time\\nfor _ in range(240):\\n    time.sleep(0.25)\\n    try:\\n        open({str(grades)!r}, 'a')"
             ".write('linger,sdpa,sdpa,999,10,graded,,bwrap\\\\n')\\n    except OSError:\\n        pass\\n")
    return f"""
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "{later}", "{t.marker}"])
    os._exit(0)
os.wait()
print("ATTACK linger: started a process in a new session")
"""


def network(t: Targets) -> str:
    return f"""
import socket
for family, address in [(socket.AF_INET, ("127.0.0.1", {t.port})), (socket.AF_UNIX, {t.abstract!r})]:
    try:
        socket.socket(family).connect(address)
        print("ATTACK network: REACHED", address)
    except OSError as err:
        print("ATTACK network: blocked", err.strerror)
"""


def forks(t: Targets) -> str:
    return f"""
import os, signal
children = []
try:
    for _ in range(5000):
        pid = os.fork()
        if pid == 0:
            os.execv("/usr/bin/sleep", ["sleep", "{t.marker}"])
        children.append(pid)
except OSError as err:
    print("ATTACK forks: refused after", len(children), err.strerror)
for pid in children:  # let the notebook carry on: the point was the limit
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


ATTACKS = {"tampers-with-grading": (tamper, UNSCALED), "vandal": (vandal, REFERENCE), "leaks-secrets": (leak, REFERENCE),
           "lingers": (linger, REFERENCE), "phones-home": (network, REFERENCE), "fork-bomb": (forks, REFERENCE)}


def attack_notebooks(t: Targets) -> dict[str, dict]:
    """student -> notebook: each attack in the answer cell, after an answer that earns what the row expects."""
    return {student: answered(answer + "\n" + attack(t)) for student, (attack, answer) in ATTACKS.items()}


EXPECTED = {  # student: (score or None when failed, status, words the detail must contain)
    "tampers-with-grading": (5, "graded", "[sdpa.unscaled]"),
    "vandal": (10, "graded", "all tests passed"),
    "leaks-secrets": (10, "graded", "all tests passed"),
    "lingers": (10, "graded", "all tests passed"),
    "phones-home": (10, "graded", "all tests passed"),
    "fork-bomb": (10, "graded", "all tests passed"),
}
# What each attack's own output must show: the sandbox, not luck or file permissions, stopped it.
OUTCOMES = {
    "tampers-with-grading": ["ATTACK tamper: refused Read-only file system"] * 3,
    "vandal": ["ATTACK vandal: gradebook OperationalError unable to open database file",
               *["ATTACK vandal: refused No such file or directory"] * 4],
    "leaks-secrets": [*["ATTACK leak: refused No such file or directory"] * 3],
    "lingers": ["ATTACK linger: started a process in a new session"],
    "phones-home": ["ATTACK network: blocked Connection refused"] * 2,
    "fork-bomb": ["ATTACK forks: refused after"],
}


def make_course(course: Path, submissions: dict[str, dict | str | None]) -> None:
    """A course directory at ``course`` (config and sources) with ``submissions`` in ``submitted/``."""
    course.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    for student, notebook in submissions.items():
        folder = course / "submitted" / student / "sdpa"
        folder.mkdir(parents=True)
        if notebook is None:
            (folder / "notes.txt").write_text("forgot the notebook")
        else:
            (folder / "sdpa.ipynb").write_text(notebook if isinstance(notebook, str) else json.dumps(notebook))


def plant_link(course: Path, t: Targets) -> None:
    """The leaking student's folder also holds a symbolic link to the secret, which staging must not follow."""
    (course / "submitted" / "leaks-secrets" / "sdpa" / "secret-link.txt").symlink_to(t.secret)


class Listeners:
    """A TCP listener on the host's loopback and an abstract unix socket; afterwards, did anything connect?"""

    def __init__(self) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.abstract = f"\0coursekit-test-{uuid.uuid4().hex}"
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.abstract)
        self.unix.listen()
        self.port = self.tcp.getsockname()[1]

    def connections(self) -> int:
        count = 0
        for listener in (self.tcp, self.unix):
            listener.setblocking(False)
            try:
                while True:
                    listener.accept()[0].close()
                    count += 1
            except BlockingIOError:
                pass
        return count

    def close(self) -> None:
        self.tcp.close()
        self.unix.close()


def host_processes_with(marker: str) -> list[str]:
    """Command lines of processes on this machine (any namespace) that contain ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and marker in cmdline:
            found.append(cmdline)
    return found


def processes_of(uid: int) -> int:
    """How many processes on this machine belong to ``uid``."""
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            count += proc.name.isdigit() and proc.stat().st_uid == uid
        except OSError:
            continue
    return count


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def forks_started(printed: str) -> int:
    """How many processes the fork bomb started before the limit refused one."""
    return int(printed.split("ATTACK forks: refused after ")[1].split()[0])


def outputs(course: Path, student: str) -> str:
    """Everything the student's cells printed, as the grader recorded it in autograded/."""
    nb = json.loads((course / "autograded" / student / "sdpa" / "sdpa.ipynb").read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


# A supervisor that starts `coursekit grade`, stops it (SIGKILL to the run's process only, or SIGINT to its group
# as Ctrl-C does) once it got as far as asked, and reports what is left. It makes itself a child subreaper:
# whatever the stopped run leaves behind (pool workers, multiprocessing's resource tracker, sandboxes) is
# reparented to it, so every survivor is seen instead of being lost to init.
SUPERVISOR = r"""
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
course, coursekit, wait_for, how = sys.argv[1:5]
run = subprocess.Popen([coursekit, "grade", "sdpa", "--workers", "2", "--cell-timeout", "60"], cwd=course,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)

def processes():
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), fields[0], cmdline)  # ppid, state, command line
    return table

def descendants(root):
    table, found, frontier = processes(), [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, state, cmdline) in table.items():
            if ppid == parent and state != "Z":
                found.append((pid, cmdline))
                frontier.append(pid)
    return found

manifest = os.path.join(course, "reports", "sdpa", "manifest.json")
deadline, seen = time.monotonic() + 600, set()
while time.monotonic() < deadline and run.poll() is None:
    if wait_for == "one-graded" and os.path.exists(manifest) and json.load(open(manifest)):
        break
    running = descendants(run.pid)
    seen |= {c[:80] for _, c in running}
    if wait_for == "sandbox" and any("-m coursekit.autograder.child" in c for _, c in running):
        break
    time.sleep(0.05)
stopped = run.poll() is None
graded_when_stopped = len(json.load(open(manifest))) if os.path.exists(manifest) else 0
if stopped and how == "kill-parent":
    os.kill(run.pid, signal.SIGKILL)
elif stopped:
    os.killpg(run.pid, signal.SIGINT)
code = run.wait(timeout=120)
stderr = run.stderr.read()
for _ in range(200):  # a moment for the kernel to deliver the parent-death signals, reaping as they die
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    left = descendants(os.getpid())
    if not left:
        break
    time.sleep(0.05)
print(json.dumps({"code": code, "stderr": stderr, "survivors": [c for _, c in left], "stopped": stopped,
                  "graded_when_stopped": graded_when_stopped, "seen": sorted(seen)}))
for pid, _ in left:
    os.kill(pid, signal.SIGKILL)
"""


def supervise(course: Path, wait_for: str, how: str) -> dict:
    """Run `coursekit grade sdpa --workers 2` in ``course`` and stop it once ``wait_for`` ("one-graded": a student
    is in the manifest; "sandbox": a submission is running) by ``how`` ("kill-parent" or "ctrl-c")."""
    coursekit = str(Path(sys.executable).parent / "coursekit")
    proc = subprocess.run([sys.executable, "-c", SUPERVISOR, str(course), coursekit, wait_for, how],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
