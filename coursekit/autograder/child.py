"""The learner's side of the sandbox: the process that runs a submission's cells and answers the grader.

Started by :class:`coursekit.autograder.sandbox.Sandbox` as
``python -I -m coursekit.autograder.child RFD WFD LIMITS [WRAPPER]`` inside the OS sandbox. Before any
learner code runs it caps its own resources (the limits then bind every process it starts), takes stdin
and stdout away from the learner (the protocol runs over the two pipe fds alone), and resolves the call
wrapper it was handed (``module:function``; for grading, the shortcut watch of :mod:`coursekit.grading`).
Then it serves requests: run a cell, look up a global, read an attribute, call a function. Results go back
as plain data or as handles (:mod:`coursekit.autograder.protocol`); the learner's exceptions go back by
name and message.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import resource
import sys
from contextlib import nullcontext, redirect_stderr, redirect_stdout
from typing import Any, Callable

ANSI = re.compile(r"\x1b\[[0-9;]*m")
MAX_TEXT = 100_000  # characters of a cell's stdout or stderr sent back


def limit_resources(limits: dict[str, float]) -> None:
    """Cap this process and everything it starts. Hard limits too: the learner's code cannot raise them again.

    RLIMIT_NPROC counts the tasks of this uid in this user namespace (the sandbox's own, Linux 5.14 or later),
    so it binds the sandbox alone, except where the host uid is root: the kernel exempts root, and the grader
    adds a pids cgroup instead (:mod:`coursekit.autograder.isolation`). ``max_processes`` 0 sets none (no
    sandbox: the count would be the grader's user's).
    """
    cpu = int(limits["cpu_time_s"])
    caps = {  # (soft, hard)
        resource.RLIMIT_AS: (int(limits["memory_mb"]) * 2**20,) * 2,
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the limit; SIGKILL a second later for code that ignores it
        resource.RLIMIT_FSIZE: (int(limits["file_size_mb"]) * 2**20,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    if limits["max_processes"]:
        caps[resource.RLIMIT_NPROC] = (int(limits["max_processes"]),) * 2
    for which, (soft, hard) in caps.items():
        _, ceiling = resource.getrlimit(which)  # never above what the grader itself was given
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(which, (soft, hard))


class Child:
    """One learner's namespace, in a real IPython shell, answering the grader's requests."""

    def __init__(self, rfd: int, wfd: int, wrapper: Callable[[Any], Any] | None) -> None:
        from IPython.core.interactiveshell import InteractiveShell

        self.rfd, self.wfd, self.wrapper = rfd, wfd, wrapper
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.handles: dict[int, Any] = {}

        class Shell(InteractiveShell):
            def enable_gui(self, gui=None):  # `%matplotlib inline` needs no event loop here
                pass

        # A real IPython shell, so magics and get_ipython() in learners' cells behave as in Jupyter.
        self.shell = Shell.instance(user_ns=self.namespace)

    def encode(self, obj: Any) -> Any:
        import torch

        from coursekit.autograder.protocol import is_plain

        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu().clone()
        if isinstance(obj, list) and is_plain(obj):
            return [self.encode(x) for x in obj]
        if isinstance(obj, tuple) and is_plain(obj):
            return tuple(self.encode(x) for x in obj)
        if isinstance(obj, dict) and is_plain(obj):
            return {k: self.encode(v) for k, v in obj.items()}
        if is_plain(obj):
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
        with redirect_stdout(out), redirect_stderr(err):
            result = self.shell.run_cell(source, store_history=True)  # history: a trailing ";" silences output
        failure = result.error_before_exec or result.error_in_exec
        error = (type(failure).__name__, str(failure)) if failure is not None else None
        plain = lambda text: ANSI.sub("", text)[-MAX_TEXT:]  # noqa: E731 (IPython colours its tracebacks)
        return {"stdout": plain(out.getvalue()), "stderr": plain(err.getvalue()), "error": error}

    def call(self, handle: int, args: Any, kwargs: Any, context: Any) -> Any:
        target = self.handles[handle]
        args, kwargs = self.decode(args), self.decode(kwargs)
        wrapped = self.wrapper(context) if context is not None and self.wrapper else nullcontext()
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), wrapped:
            return target(*args, **kwargs)

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
            return {"ok": self.encode(self.call(*request[1:]))}
        raise ValueError(f"unknown request {op!r}")

    def serve(self) -> None:
        from coursekit.autograder.protocol import read_message, write_message

        while True:
            try:
                request = read_message(self.rfd)
            except EOFError:
                return
            try:
                reply = self.handle(request)
            except BaseException as exc:  # the learner's exception goes back as data, whatever it is
                reply = {"raise": (type(exc).__name__, str(exc)[:5000])}
            write_message(self.wfd, reply)


def resolve(wrapper: str) -> Callable[[Any], Any]:
    """``"package.module:function"`` -> the function (imported before any learner code can replace it)."""
    module, _, name = wrapper.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str]) -> None:
    rfd, wfd, limits = int(argv[0]), int(argv[1]), json.loads(argv[2])
    limit_resources(limits)
    # Nothing the learner prints may reach the protocol: stdin and stdout are /dev/null from here on.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    wrapper = resolve(argv[3]) if len(argv) > 3 and argv[3] else None
    child = Child(rfd, wfd, wrapper)
    # python -I left the working directory off sys.path so nothing in it could stand in for this module;
    # now put it back, so a learner's own helper modules import as they do in Jupyter.
    sys.path.insert(0, "")
    child.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
