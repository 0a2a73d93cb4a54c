"""coursekit.autograder.sandbox: the learner's process is an OS sandbox that shows it nothing of the course or
the machine, limits it, outlives nothing, reaches no network, and only plain data comes back from it."""

import os
import pickle
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from coursekit.autograder.execute import CheckedSandbox, Limits
from coursekit.autograder.sandbox import RemoteObject, Sandbox, SandboxError
from coursekit.grading import ShortcutUsed
from coursekit.grading.core import remote_task
from tests.conftest import ROOT
from tests.hostile_cohort import host_processes_with, processes_of

LIMITS = Limits(memory_mb=2048, cell_timeout_s=30, disk_mb=64, file_size_mb=16)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submission") / "sdpa"
    folder.mkdir()
    (folder / "data.txt").write_text("the learner's own data file\n")
    with CheckedSandbox(str(folder), LIMITS) as sandbox:
        yield sandbox


def test_data_comes_back_as_copies_and_code_as_proxies(box):
    result = box.run_cell("import torch\nx = torch.arange(4.0)\ndef double(t):\n    return 2 * t, {'n': len(t)}\nprint('hi')")
    assert result == {"stdout": "hi\n", "stderr": "", "error": None}
    torch.testing.assert_close(box.lookup("x"), torch.arange(4.0))
    double = box.lookup("double")
    assert isinstance(double, RemoteObject)
    out, info = double(torch.ones(3))
    torch.testing.assert_close(out, torch.full((3,), 2.0))
    assert info == {"n": 3}


def test_learner_exceptions_arrive_by_name(box):
    box.run_cell("def broken(*args):\n    raise NotImplementedError('not yet')")
    with pytest.raises(NotImplementedError, match="not yet"):
        box.lookup("broken")()
    assert box.run_cell("1 / 0")["error"] == ("ZeroDivisionError", "division by zero")
    with pytest.raises(NameError, match="did you run the cell"):
        box.lookup("undefined_name")


def test_shortcut_watch_runs_inside_the_learner_process(box):
    box.run_cell("import coursekit.attention as ck\ndef cheat(q, k, v):\n    return ck.scaled_dot_product_attention(q, k, v)")
    q = torch.randn(2, 3, 4)
    with remote_task("scaled dot-product attention"), pytest.raises(ShortcutUsed, match="coursekit.attention"):
        box.lookup("cheat")(q, q, q)


def test_the_learner_sees_only_its_own_folder_and_a_read_only_system(box, tmp_path):
    import coursekit.grading

    secret = tmp_path / "instructor-secret.txt"
    secret.write_text("not for learners")
    grading_file = coursekit.grading.__file__
    probe = f"""
import ctypes, os
print("uid", os.getuid(), "pid", os.getpid(), "cwd", os.getcwd(), "files", sorted(os.listdir(".")))
print("data", open("data.txt").read().strip())
for path in [{str(ROOT / 'solutions')!r}, {str(ROOT / 'nbgrader_config.py')!r}, {str(secret)!r}, {str(Path.home())!r} + "/.bashrc"]:
    print("visible" if os.path.exists(path) else "absent", path)
for path in [{grading_file!r}, "/usr/lib/new-file", "/etc/passwd", "/new-file"]:
    try:
        open(path, "a").write("#")
        print("wrote", path)
    except OSError as err:
        print("refused", path, err.strerror)
open("notes.txt", "w").write("fine")
open("/tmp/scratch", "w").write("fine")
try:
    open("/tmp/big", "wb").write(bytes(20 * 2**20))
except OSError as err:
    print("file too big", err.strerror)
for folder in ["/tmp", "."]:
    for n in range(8):
        try:
            open(f"{{folder}}/part{{n}}", "wb").write(bytes(12 * 2**20))
        except OSError as err:
            print(folder, "full:", err.strerror)
            break
print("processes", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("nested user namespace", ctypes.CDLL(None).unshare(0x10000000))
"""
    out = box.run_cell(probe)["stdout"]
    assert "uid 1000 pid 2 cwd /home/learner/sdpa files ['data.txt']" in out, out
    assert "data the learner's own data file" in out
    assert "visible" not in out, out
    for path in (grading_file, "/usr/lib/new-file", "/etc/passwd", "/new-file"):
        assert f"refused {path} Read-only file system" in out, out
    assert "file too big File too large" in out, out
    assert "/tmp full: No space left on device" in out and ". full: No space left on device" in out, out
    assert "processes [1, 2]" in out, out  # its own PID namespace: bwrap's init and itself
    assert "nested user namespace -1" in out, out
    assert secret.read_text() == "not for learners"


def test_no_connection_reaches_a_listener_on_the_hosts_loopback(box):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    name = f"\0coursekit-test-{uuid.uuid4().hex}"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(name)
    unix.listen()
    try:
        out = box.run_cell(f"""
import socket
for family, address in [(socket.AF_INET, ("127.0.0.1", {tcp.getsockname()[1]})), (socket.AF_UNIX, {name!r})]:
    try:
        socket.socket(family).connect(address)
        print("REACHED", family)
    except OSError as err:
        print("blocked:", err.strerror)
""")["stdout"]
        assert "REACHED" not in out and out.count("blocked:") == 2, out
        for listener in (tcp, unix):
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()  # nothing ever arrived
    finally:
        tcp.close()
        unix.close()


def test_memory_is_limited(box):
    error = box.run_cell("hog = bytearray(16 * 2**30)")["error"]
    assert error is not None and error[0] == "MemoryError"


def test_process_count_is_limited_and_every_process_dies_with_the_sandbox(tmp_path):
    marker = f"{uuid.uuid4().int % 10**6}.{os.getpid()}"
    forks = f"""
import os, time
started = 0
try:
    for _ in range(1000):
        if os.fork() == 0:
            os.execv("/usr/bin/sleep", ["sleep", "{marker}"])
        started += 1
except OSError as err:
    print("fork refused after", started, err.strerror)
if os.fork() == 0:  # a double fork into a new session, the way a daemon leaves its parent behind
    os.setsid()
    if os.fork() == 0:
        os.execv("/usr/bin/sleep", ["sleep", "{marker}"])
    os._exit(0)
"""
    # More processes of the grader's user than the limit allows: a limit that counted them would allow no fork.
    extra = [subprocess.Popen(["sleep", "120"]) for _ in range(max(0, 70 - processes_of(os.geteuid())))]
    try:
        with CheckedSandbox(str(tmp_path), Limits(memory_mb=2048, cell_timeout_s=30, max_processes=64)) as sandbox:
            out = sandbox.run_cell(forks)["stdout"]
            assert "fork refused after" in out, out
            assert 0 < int(out.split("fork refused after ")[1].split()[0]) < 64
            assert host_processes_with(marker), "the test must see the sandbox's processes while it runs"
    finally:
        for process in extra:
            process.kill()
            process.wait()
    assert host_processes_with(marker) == []


def test_cpu_time_is_limited(tmp_path):
    with CheckedSandbox(str(tmp_path), Limits(cpu_time_s=5, cell_timeout_s=120)) as sandbox:
        with pytest.raises(SandboxError, match="killed by SIGXCPU, after 5 s of CPU time"):
            sandbox.run_cell("while True:\n    pass")


def test_a_notebook_that_runs_too_long_in_total_is_stopped(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook

    from coursekit.autograder.execute import TrustedExecute

    nb = new_notebook(cells=[new_code_cell("import time\ntime.sleep(1.5)") for _ in range(6)])
    step = TrustedExecute(notebook_timeout_s=4, cell_timeout_s=30)
    nb, _ = step.preprocess(nb, {"coursekit_setup_sources": [], "metadata": {"path": str(tmp_path)}})
    assert nb.metadata["coursekit"]["status"] == "failed"
    assert "the whole notebook ran longer than 4 s" in nb.metadata["coursekit"]["detail"]


def test_exiting_the_process_is_reported(tmp_path):
    with CheckedSandbox(str(tmp_path), LIMITS) as sandbox, pytest.raises(SandboxError, match="exited with status 7"):
        sandbox.run_cell("import os\nos._exit(7)")


def test_endless_loops_time_out(tmp_path):
    with CheckedSandbox(str(tmp_path), Limits(cell_timeout_s=3)) as sandbox:
        with pytest.raises(SandboxError, match="timed out"):
            sandbox.run_cell("import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except BaseException:\n        pass")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_forged_reply_cannot_run_code_in_the_grader(tmp_path):
    """A learner who finds the protocol pipe and writes a pickle that would run os.system gets nothing."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(type("Evil", (), {"__reduce__": lambda self: (print, (f"ran in grader {marker}",))})())
    cell = (f"import os, struct, sys\nfd = int(sys.argv[2])\ndata = {payload!r}\n"
            "os.write(fd, struct.pack('!Q', len(data)) + data)\nos._exit(0)")
    with CheckedSandbox(str(tmp_path), LIMITS) as sandbox, pytest.raises(SandboxError, match="not a valid reply"):
        sandbox.run_cell(cell)


def test_a_plain_sandbox_knows_nothing_of_the_checks(tmp_path):
    """The sandbox imports no grading code: what a call carries and which exceptions come back are handed in."""
    code = ("import sys, coursekit.autograder.sandbox, coursekit.autograder.child; "
            "print(sorted(m for m in sys.modules if m.startswith('coursekit.grading')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    code = "import sys, coursekit.grading; print(sorted(m for m in sys.modules if m.startswith('coursekit.autograder')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    with Sandbox(str(tmp_path), LIMITS) as sandbox:
        sandbox.run_cell("from coursekit.grading import CheckFailed\ndef fails():\n    raise CheckFailed('wrong')")
        with pytest.raises(Exception, match="CheckFailed: wrong") as caught:
            sandbox.lookup("fails")()
        assert type(caught.value).__name__ == "RemoteError"
