"""Run a learner's code in an OS sandbox, and reach into it only through data.

The autograder must decide pass or fail in a way the submission cannot fake. Code that shares a process
with the tests can fake anything (hide tracebacks, patch ``torch.allclose``, replace the checks), so the
learner's cells run in a :class:`Sandbox`: a child process (:mod:`coursekit.autograder.child`) inside
bubblewrap (:mod:`coursekit.autograder.isolation`: read-only system, no course files, no network, its own
PIDs, limits that bind it alone), while the tests run in the grader's own process. A test that names a
learner's function gets a :class:`RemoteObject` proxy: calling it sends the arguments to the child and
brings the result back as plain data (:mod:`coursekit.autograder.protocol`); objects that are not plain
data stay in the child and come back as further proxies.

The sandbox knows nothing of the checks that call into it. Whoever uses it hands it a :class:`Bridge`:
what to send along with each call (for grading, the task whose shortcut watch must run around it), the
``module:function`` the child wraps each call in, and the exceptions that may come back as themselves.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coursekit.autograder import isolation as iso
from coursekit.autograder.protocol import ProtocolError, is_handle, read_message, write_message
from coursekit.errors import SandboxError  # noqa: F401 (raised here; shared with coursekit.grading)


@dataclass(frozen=True)
class Limits:
    """What a submission may use. Wall time is per request (one cell, or one call from a test)."""

    memory_mb: int = 4096  # address space of each process
    max_processes: int = 256  # processes and threads in the whole sandbox (torch starts one thread per core)
    cpu_time_s: int = 3600  # CPU seconds of each process
    file_size_mb: int = 512  # the largest file it may write
    disk_mb: int = 512  # each private tmpfs: the working folder (HOME), /tmp, /dev/shm
    cell_timeout_s: float = 120.0


def _no_context() -> None:
    return None


@dataclass(frozen=True)
class Bridge:
    """What the code calling into the sandbox hands it, so the sandbox need not import that code.

    Args:
        context: called in the grader before each call into the learner's code; what it returns (plain data)
            travels with the call. None means "no wrapping".
        wrapper: ``"module:function"`` the child imports before any learner code runs; each call with a context
            runs inside ``function(context)`` (a context manager).
        exceptions: names of exceptions that, raised by a call in the child, are raised here as these types.
    """

    context: Callable[[], Any] = _no_context
    wrapper: str = ""
    exceptions: Mapping[str, type[BaseException]] = field(default_factory=dict)


# Learner exceptions re-raised under their own name where that name is safe to reuse; others arrive as RemoteError.
SAFE_EXCEPTIONS = {name: getattr(builtins, name) for name in (
    "NotImplementedError", "ValueError", "TypeError", "RuntimeError", "IndexError", "KeyError", "AttributeError",
    "NameError", "ZeroDivisionError", "MemoryError", "AssertionError")}




class RemoteError(Exception):
    """An exception raised by the learner's code in the child, with its type name and message."""

    def __init__(self, ename: str, evalue: str) -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue = ename, evalue


class Sandbox:
    """A child process holding one learner's namespace, in the OS sandbox. Use as a context manager.

    Args:
        folder: the submission's folder on the host; its files are copied into the sandbox's private
            working folder (with no isolation, the child runs in ``folder`` itself).
        limits: what the submission may use.
        bridge: what calls into the sandbox carry (see :class:`Bridge`).
        isolation: how to isolate; by default the machine's, checked by
            :func:`coursekit.autograder.isolation.probe` (which refuses when no sandbox can be made).
    """

    def __init__(self, folder: str, limits: Limits = Limits(), *, bridge: Bridge = Bridge(),
                 isolation: iso.Isolation | None = None) -> None:
        self.limits, self.bridge = limits, bridge
        self.isolation = iso.probe() if isolation is None else isolation
        self.exceptions = {**SAFE_EXCEPTIONS, **bridge.exceptions}
        self.dead: str | None = None
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Outside a user namespace of its own, RLIMIT_NPROC would count all the grader's processes: none then.
        child_limits = {"memory_mb": limits.memory_mb, "cpu_time_s": limits.cpu_time_s, "file_size_mb": limits.file_size_mb,
                        "max_processes": limits.max_processes if self.isolation.isolated else 0}
        argv = [sys.executable, "-I", "-m", "coursekit.autograder.child", str(to_child_r), str(from_child_w),
                json.dumps(child_limits), bridge.wrapper]
        # A file, not a pipe: a submission flooding stderr from C code must not block on a full pipe.
        self._stderr = tempfile.TemporaryFile()
        self._cgroup: iso.PidsCgroup | None = None
        extra_fds: list[int] = []
        try:
            if self.isolation.isolated:
                files = {p: os.path.join(folder, p) for p in sorted(os.listdir(folder))
                         if os.path.isfile(os.path.join(folder, p))}
                argv, extra_fds = iso.bwrap_command(self.isolation, argv, files, os.path.basename(os.path.abspath(folder)),
                                                    disk_mb=limits.disk_mb, hidden=[folder])
                if self.isolation.cgroup:
                    self._cgroup = iso.PidsCgroup(self.isolation.cgroup, limits.max_processes)
                cwd, env = "/", {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            else:
                cwd, env = folder, _plain_env()
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, pass_fds=(to_child_r, from_child_w, *extra_fds), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True,
                preexec_fn=self._cgroup.join if self._cgroup else None,
            )
        except BaseException:
            for fd in (self._to_child, self._from_child):
                os.close(fd)
            self._stderr.close()
            if self._cgroup:
                self._cgroup.close()
            raise
        finally:
            for fd in (to_child_r, from_child_w, *extra_fds):
                os.close(fd)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the child and everything it started (the PID namespace dies with it)."""
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
        if self._cgroup:
            self._cgroup.close()
            self._cgroup = None
        self._stderr.close()

    def _why_dead(self) -> str:
        code = self.process.wait(timeout=5)
        self._stderr.seek(max(0, self._stderr.seek(0, os.SEEK_END) - 4096))
        stderr = self._stderr.read().decode(errors="replace").strip().splitlines()
        last = f" Last message: {stderr[-1][:300]}" if stderr else ""
        if self.isolation.isolated and code > 128:  # bwrap reports a child killed by signal N as 128 + N
            code = 128 - code
        if code < 0:
            name = signal.Signals(-code).name
            why = {"SIGKILL": f": out of memory, or past the limit of {self.limits.cpu_time_s} s of CPU time",
                   "SIGXCPU": f", after {self.limits.cpu_time_s} s of CPU time"}.get(name, "")
            return f"the kernel died (killed by {name}{why}).{last}"
        return f"the kernel exited with status {code} (did the code call exit() or os._exit()?).{last}"

    def request(self, *message: Any, timeout: float | None = None) -> dict:
        if self.dead:
            raise SandboxError(self.dead)
        timeout = self.limits.cell_timeout_s if timeout is None else timeout
        try:
            write_message(self._to_child, message)
            return read_message(self._from_child, deadline=time.monotonic() + timeout)
        except TimeoutError:
            self.dead = f"timed out: a cell or call ran longer than {timeout:g} s"
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.dead = self._why_dead()
        except (ProtocolError, Exception) as exc:  # a reply that is not valid data: the protocol was tampered with
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

    def call(self, handle: int, args: tuple, kwargs: dict) -> Any:
        return self._wrap(self.request("call", handle, _unproxy(args), _unproxy(kwargs), self.bridge.context()))

    def _wrap(self, reply: dict) -> Any:
        if "raise" in reply:
            ename, evalue = reply["raise"]
            raise self.exceptions[ename](evalue) if ename in self.exceptions else RemoteError(ename, evalue)
        return self._proxies(reply["ok"])

    def _proxies(self, value: Any) -> Any:
        if is_handle(value):
            return RemoteObject(self, value["__handle__"], value["type"], value["callable"])
        if isinstance(value, list):
            return [self._proxies(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._proxies(v) for v in value)
        if isinstance(value, dict):
            return {k: self._proxies(v) for k, v in value.items()}
        return value


def _plain_env() -> dict[str, str]:
    """The environment of an unisolated child: the grader's, without Jupyter's secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_TOKEN"))}
    env["MPLBACKEND"] = "agg"
    return env


def _unproxy(value: Any) -> Any:
    if isinstance(value, RemoteObject):
        return {"__handle__": value._handle}
    if isinstance(value, (list, tuple)):
        return type(value)(_unproxy(v) for v in value)
    if isinstance(value, dict):
        return {k: _unproxy(v) for k, v in value.items()}
    return value


class RemoteObject:
    """Stands in, in the grader's process, for an object that lives in the learner's process."""

    def __init__(self, sandbox: Sandbox, handle: int, typename: str, is_callable: bool) -> None:
        self._sandbox, self._handle, self._typename, self._callable = sandbox, handle, typename, is_callable

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._callable:
            raise TypeError(f"'{self._typename}' object is not callable")
        return self._sandbox.call(self._handle, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._sandbox._wrap(self._sandbox.request("getattr", self._handle, name))

    def __repr__(self) -> str:
        return f"<learner's {self._typename}>"
