"""coursekit.sandbox: the learner's process is limited, and only plain data comes back from it."""

import pickle

import pytest
import torch

from coursekit.grading import ShortcutUsed
from coursekit.sandbox import Limits, RemoteObject, Sandbox, SandboxError, remote_task


@pytest.fixture
def box(tmp_path):
    with Sandbox(str(tmp_path), Limits(memory_mb=2048, cell_timeout_s=15)) as sandbox:
        yield sandbox


def test_data_comes_back_as_copies_and_code_as_proxies(box):
    result = box.run_cell("import torch\nx = torch.arange(4.0)\ndef double(t):\n    return 2 * t, {'n': len(t)}\nprint('hi')")
    assert result == {"stdout": "hi\n", "stderr": "", "error": None, "figures": []}
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


def test_exiting_the_process_is_reported(box):
    with pytest.raises(SandboxError, match="exited with status 7"):
        box.run_cell("import os\nos._exit(7)")


def test_endless_loops_time_out(tmp_path):
    with Sandbox(str(tmp_path), Limits(cell_timeout_s=3)) as sandbox:
        with pytest.raises(SandboxError, match="timed out"):
            sandbox.run_cell("import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except BaseException:\n        pass")


def test_memory_is_limited(box):
    error = box.run_cell("hog = bytearray(16 * 2**30)")["error"]
    assert error is not None and error[0] == "MemoryError"


def test_network_is_unreachable(box):
    result = box.run_cell("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=2)\n"
                          "except OSError as e:\n    print(type(e).__name__, e.errno)")
    assert "101" in result["stdout"] or "Network is unreachable" in result["stdout"], result


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_forged_reply_cannot_run_code_in_the_grader(box, tmp_path):
    """A learner who finds the protocol pipe and writes a pickle that would run os.system gets nothing."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(type("Evil", (), {"__reduce__": lambda self: (print, (f"ran in grader {marker}",))})())
    cell = (f"import os, struct, sys\nfd = int(sys.argv[3])\ndata = {payload!r}\n"
            "os.write(fd, struct.pack('!Q', len(data)) + data)\nos._exit(0)")
    with pytest.raises(SandboxError, match="not a valid reply"):
        box.run_cell(cell)


def test_figures_come_back_as_png_and_nothing_else(box):
    import base64

    result = box.run_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('mine')\n"
                          "from IPython.display import HTML, display\ndisplay(HTML('<script>alert(1)</script>'))")
    assert result["error"] is None and len(result["figures"]) == 1, result
    assert base64.b64decode(result["figures"][0])[:8] == b"\x89PNG\r\n\x1a\n"
    shown_then_left_open = box.run_cell("plt.figure(); plt.plot([2, 1]); plt.show()\nplt.figure(); plt.plot([1])")
    assert len(shown_then_left_open["figures"]) == 2, "plt.show() and a figure left open both come back"
