"""Run a learner's code in a separate, limited process, and reach into it only through data.

The autograder must decide pass or fail in a way the submission cannot fake. Code that shares a process
with the tests can fake anything (hide tracebacks, patch ``torch.allclose``, replace the checks), so the
learner's cells run here, in a :class:`Sandbox` child process, and the tests run in the grader's own
process. A test that names a learner's function gets a :class:`RemoteObject` proxy: calling it sends the
arguments to the child and brings the result back as plain data (tensors, numbers, strings, lists,
dicts), decoded with ``torch.load(weights_only=True)`` so nothing the child sends can execute code in
the grader. Objects that are not plain data stay in the child and come back as further proxies.

Limits on the child: address space (memory), process count, wall time per request, and no network
(a fresh network namespace, where the platform allows it; the protocol runs over pipes, not sockets).
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any, Iterator

import torch

CLONE_NEWNET = 0x40000000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HEADER = struct.Struct("!Q")
_forbidden_task = threading.local()  # set by coursekit.grading.forbid_shortcuts for remote calls


@dataclass(frozen=True)
class Limits:
    """What a submission may use. Wall time is per request (one cell, or one call from a test)."""

    memory_mb: int = 4096
    max_processes: int = 4096  # threads count too (torch starts one per core)
    cell_timeout_s: float = 120.0
    network: bool = False


class SandboxError(RuntimeError):
    """The child died, timed out or broke the protocol: the submission could not be graded."""


class RemoteError(Exception):
    """An exception raised by the learner's code in the child, with its type name and message."""

    def __init__(self, ename: str, evalue: str) -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue = ename, evalue


# ---------------------------------------------------------------------------------------------------
# Framing and encoding (shared by both sides)
# ---------------------------------------------------------------------------------------------------

def _write(fd: int, payload: Any) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    os.write(fd, _HEADER.pack(len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, remaining = [], n
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read(fd: int, deadline: float | None = None, max_bytes: int = 1 << 31) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > max_bytes:
        raise SandboxError(f"the submission sent {size} bytes in one message")
    # weights_only: tensors and plain containers only; a crafted pickle cannot run code here.
    return torch.load(io.BytesIO(_read_exact(fd, size, deadline)), weights_only=True)


_PLAIN = (type(None), bool, int, float, str, complex)


def _is_plain(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, _PLAIN) or isinstance(obj, torch.Tensor) or isinstance(obj, (torch.dtype, torch.Size)):
        return True
    if depth > 8:
        return False
    if isinstance(obj, (list, tuple)):
        return all(_is_plain(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v, depth + 1) for k, v in obj.items())
    return False


# ---------------------------------------------------------------------------------------------------
# The child: runs the learner's code, answers requests
# ---------------------------------------------------------------------------------------------------

MAX_FIGURE_BYTES = 2 * 2**20  # one PNG a cell displays (a course plot is 20-100 kB)
MAX_DISPLAYS = 20  # per cell


def _figures_displayed(displays: list[dict]) -> list[str]:
    """The PNGs (base64) among what a cell displayed: the only display data the grader takes back."""
    import base64

    figures = []
    for data in displays[:MAX_DISPLAYS]:
        png = data.get("image/png")
        if isinstance(png, bytes):
            png = base64.b64encode(png).decode("ascii")
        if isinstance(png, str) and len(png) <= MAX_FIGURE_BYTES * 4 // 3 + 4:
            figures.append(png)
    return figures


class _Child:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.handles: dict[int, Any] = {}
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell

        displays: list[dict] = []

        class Capture(DisplayPublisher):  # what the cell displays (figures), kept for the feedback page
            def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
                displays.append(dict(data))

            def clear_output(self, wait=False):
                displays.clear()

        class Shell(InteractiveShell):
            display_pub_class = Capture

            def enable_gui(self, gui=None):  # `%matplotlib inline` needs no event loop here
                pass

        # A real IPython shell, so magics and get_ipython() in learners' cells behave as in Jupyter.
        self.shell = Shell.instance(user_ns=self.namespace)
        self.displays = displays

    def encode(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu().clone()
        if isinstance(obj, (list, tuple)) and _is_plain(obj):
            return type(obj)(self.encode(x) for x in obj) if isinstance(obj, list) else tuple(self.encode(x) for x in obj)
        if isinstance(obj, dict) and _is_plain(obj):
            return {k: self.encode(v) for k, v in obj.items()}
        if _is_plain(obj):
            return obj
        handle = id(obj)
        self.handles[handle] = obj
        return {"__handle__": handle, "type": type(obj).__name__, "callable": callable(obj)}

    def decode(self, obj: Any) -> Any:
        if isinstance(obj, dict) and "__handle__" in obj:
            return self.handles[obj["__handle__"]]
        if isinstance(obj, list):
            return [self.decode(x) for x in obj]
        if isinstance(obj, tuple):
            return tuple(self.decode(x) for x in obj)
        if isinstance(obj, dict):
            return {k: self.decode(v) for k, v in obj.items()}
        return obj

    def run_cell(self, source: str) -> dict:
        out, err = io.StringIO(), io.StringIO()
        error = None
        self.displays.clear()
        with redirect_stdout(out), redirect_stderr(err):
            result = self.shell.run_cell(source, store_history=True)  # history: a trailing ";" silences output
            self._flush_figures()
        failure = result.error_before_exec or result.error_in_exec
        if failure is not None:
            error = (type(failure).__name__, str(failure))
        plain = lambda text: _ANSI.sub("", text)[-100_000:]  # noqa: E731 (IPython colours its tracebacks)
        return {"stdout": plain(out.getvalue()), "stderr": plain(err.getvalue()), "error": error,
                "figures": _figures_displayed(self.displays)}

    def _flush_figures(self) -> None:
        """Show the figures a cell left open, as Jupyter's inline backend does at the end of a cell."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        try:
            for number in pyplot.get_fignums():
                buffer = io.BytesIO()
                pyplot.figure(number).savefig(buffer, format="png", bbox_inches="tight")
                self.displays.append({"image/png": buffer.getvalue()})
        finally:
            pyplot.close("all")

    def handle(self, request: tuple) -> dict:
        op = request[0]
        if op == "exec":
            return {"ok": self.run_cell(request[1])}
        if op == "lookup":
            if request[1] not in self.namespace:
                return {"missing": True}
            return {"ok": self.encode(self.namespace[request[1]])}
        if op == "getattr":
            return {"ok": self.encode(getattr(self.handles[request[1]], request[2]))}
        if op == "call":
            _, handle, args, kwargs, task = request
            target = self.handles[handle]
            args, kwargs = self.decode(args), self.decode(kwargs)
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                if task:
                    from coursekit.grading import forbid_shortcuts

                    with forbid_shortcuts(task):
                        result = target(*args, **kwargs)
                else:
                    result = target(*args, **kwargs)
            return {"ok": self.encode(result)}
        raise ValueError(f"unknown request {op!r}")

    def serve(self) -> None:
        while True:
            try:
                request = _read(self.rfd)
            except EOFError:
                return
            try:
                reply = self.handle(request)
            except BaseException as exc:  # the learner's exception goes back as data, whatever it is
                reply = {"raise": (type(exc).__name__, str(exc)[:5000])}
            _write(self.wfd, reply)


def _child_main() -> None:
    rfd, wfd = int(sys.argv[2]), int(sys.argv[3])
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # plt.show() displays, as in Jupyter
    # Nothing the learner prints may reach the protocol: stdin/stdout are /dev/null from here on.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    _Child(rfd, wfd).serve()


# ---------------------------------------------------------------------------------------------------
# The parent: starts the child, sends requests, wraps results
# ---------------------------------------------------------------------------------------------------

def _limit_child(limits: Limits) -> None:
    """Runs in the child between fork and exec: cap memory and processes, drop the network."""
    os.setsid()
    memory = limits.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not limits.network:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(CLONE_NEWNET)  # fails quietly without privileges: then the network stays


class Sandbox:
    """A child process holding one learner's namespace. Use as a context manager."""

    def __init__(self, cwd: str, limits: Limits = Limits()) -> None:
        self.limits = limits
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_TOKEN"))}
        env["PYTHONUNBUFFERED"] = "1"
        # A file, not a pipe: a submission flooding stderr from C code must not block on a full pipe.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coursekit.sandbox", "--child", str(to_child_r), str(from_child_w)],
            cwd=cwd, env=env, pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._stderr, preexec_fn=lambda: _limit_child(limits),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.dead: str | None = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        self._stderr.close()

    def _why_dead(self) -> str:
        code = self.process.wait(timeout=5)
        self._stderr.seek(max(0, self._stderr.seek(0, os.SEEK_END) - 4096))
        stderr = self._stderr.read().decode(errors="replace").strip().splitlines()
        last = f" Last message: {stderr[-1][:300]}" if stderr else ""
        if code < 0:
            name = signal.Signals(-code).name
            return f"the kernel died (killed by {name}{', probably out of memory' if name == 'SIGKILL' else ''}).{last}"
        return f"the kernel exited with status {code} (did the code call exit() or os._exit()?).{last}"

    def request(self, *message: Any, timeout: float | None = None) -> dict:
        if self.dead:
            raise SandboxError(self.dead)
        timeout = self.limits.cell_timeout_s if timeout is None else timeout
        try:
            _write(self._to_child, message)
            return _read(self._from_child, deadline=time.monotonic() + timeout)
        except TimeoutError:
            self.dead = f"timed out: a cell or call ran longer than {timeout:g} s"
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.dead = self._why_dead()
        except Exception as exc:  # a reply that is not valid data: the protocol was tampered with
            self.dead = f"the kernel sent something that is not a valid reply ({type(exc).__name__})"
        self.close()
        raise SandboxError(self.dead)

    def run_cell(self, source: str) -> dict:
        """Run one of the learner's cells; returns stdout, stderr and (ename, evalue) or None."""
        return self.request("exec", source)["ok"]

    def lookup(self, name: str) -> Any:
        """The learner's global ``name``: plain data as a copy, anything else as a RemoteObject."""
        reply = self.request("lookup", name)
        if reply.get("missing"):
            raise NameError(f"name '{name}' is not defined (did you run the cell that defines it?)")
        return self._wrap(reply)

    def _wrap(self, reply: dict) -> Any:
        if "raise" in reply:
            raise _local_exception(*reply["raise"])
        return self._proxies(reply["ok"])

    def _proxies(self, value: Any) -> Any:
        if isinstance(value, dict) and "__handle__" in value:
            return RemoteObject(self, value["__handle__"], value["type"], value["callable"])
        if isinstance(value, list):
            return [self._proxies(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._proxies(v) for v in value)
        if isinstance(value, dict):
            return {k: self._proxies(v) for k, v in value.items()}
        return value


def _unproxy(value: Any) -> Any:
    if isinstance(value, RemoteObject):
        return {"__handle__": value._handle}
    if isinstance(value, (list, tuple)):
        return type(value)(_unproxy(v) for v in value)
    if isinstance(value, dict):
        return {k: _unproxy(v) for k, v in value.items()}
    return value


def _local_exception(ename: str, evalue: str) -> BaseException:
    """Re-raise the learner's exception under the same name where that name is safe to reuse."""
    from coursekit.grading import CheckFailed, ShortcutUsed

    known = {"ShortcutUsed": ShortcutUsed, "CheckFailed": CheckFailed, "NotImplementedError": NotImplementedError,
             "ValueError": ValueError, "TypeError": TypeError, "RuntimeError": RuntimeError,
             "IndexError": IndexError, "KeyError": KeyError, "AttributeError": AttributeError,
             "NameError": NameError, "ZeroDivisionError": ZeroDivisionError, "MemoryError": MemoryError}
    return known[ename](evalue) if ename in known else RemoteError(ename, evalue)


class RemoteObject:
    """Stands in, in the grader's process, for an object that lives in the learner's process."""

    def __init__(self, sandbox: Sandbox, handle: int, typename: str, is_callable: bool) -> None:
        self._sandbox, self._handle, self._typename, self._callable = sandbox, handle, typename, is_callable

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._callable:
            raise TypeError(f"'{self._typename}' object is not callable")
        task = getattr(_forbidden_task, "task", None)
        return self._sandbox._wrap(self._sandbox.request("call", self._handle, _unproxy(args), _unproxy(kwargs), task))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._sandbox._wrap(self._sandbox.request("getattr", self._handle, name))

    def __repr__(self) -> str:
        return f"<learner's {self._typename}>"


@contextmanager
def remote_task(task: str | None) -> Iterator[None]:
    """While active, calls through RemoteObjects run under forbid_shortcuts(task) in the child."""
    previous = getattr(_forbidden_task, "task", None)
    _forbidden_task.task = task
    try:
        yield
    finally:
        _forbidden_task.task = previous


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "--child":
    _child_main()
