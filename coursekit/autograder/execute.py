"""Trusted execution of a submitted notebook: nbgrader's ``Execute`` step, done so a submission cannot fake it.

nbgrader runs a learner's cells and the test cells in one kernel, then counts a test as passed when its
cell shows no error. Anything in that kernel can hide errors or patch the checks. :class:`TrustedExecute`
replaces that step: the learner's cells run in a :class:`~coursekit.autograder.sandbox.Sandbox` (an OS
sandbox), the test cells (as nbgrader restored them from the gradebook, hidden tests included) run here in
the grader, and the outputs that nbgrader later scores are written by this code alone.

Names a test cell uses resolve, in order, to: the instructor's setup cells (read from the gradebook,
never from the submission), Python's builtins, and only then the learner's namespace, through proxies.

This is where the autograder meets :mod:`coursekit.grading`: :func:`grading_bridge` hands the sandbox the
checks' shortcut watch and their exceptions, and :class:`CheckedSandbox` is a sandbox wired with it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from contextlib import redirect_stdout
from typing import Any

import builtins
from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Float, Int

from coursekit.autograder.isolation import NO_ISOLATION, Isolation, probe
from coursekit.autograder.sandbox import Bridge, Limits, Sandbox, SandboxError


def grading_bridge() -> Bridge:
    """What calls from :mod:`coursekit.grading`'s checks into a sandbox carry: the task whose shortcut watch
    (``forbid_shortcuts``) must run around the call in the learner's process, and the checks' verdicts."""
    from coursekit.grading.core import CheckFailed, ShortcutUsed, current_task

    return Bridge(context=current_task, wrapper="coursekit.grading.core:forbid_shortcuts",
                  exceptions={"CheckFailed": CheckFailed, "ShortcutUsed": ShortcutUsed})


class CheckedSandbox(Sandbox):
    """A :class:`Sandbox` wired to :mod:`coursekit.grading` (see :func:`grading_bridge`)."""

    def __init__(self, folder: str, limits: Limits = Limits(), *, isolation: Isolation | None = None) -> None:
        super().__init__(folder, limits, bridge=grading_bridge(), isolation=isolation)


def cell_kind(cell: NotebookNode) -> str:
    """'test' (autograded), 'setup' (instructor code, locked) or 'learner' (everything else)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if cell.cell_type != "code":
        return "text"
    if meta.get("grade") and not meta.get("solution"):
        return "test"
    if meta.get("locked") and not meta.get("grade") and not meta.get("solution"):
        return "setup"
    return "learner"


class _TestNamespace(Mapping):
    """Local names for instructor code: trusted first, builtins second, the learner's process last.

    Names the instructor's code assigns go into the trusted namespace, so later test cells see them.
    """

    def __init__(self, trusted: dict[str, Any], sandbox: Sandbox) -> None:
        self.trusted, self.sandbox, self.assigned = trusted, sandbox, trusted

    def __getitem__(self, name: str) -> Any:
        for layer in (self.trusted, vars(builtins)):
            if name in layer:
                return layer[name]
        try:
            return self.sandbox.lookup(name)
        except NameError as err:
            raise KeyError(name) from err

    def __setitem__(self, name: str, value: Any) -> None:
        self.assigned[name] = value

    def __delitem__(self, name: str) -> None:
        del self.assigned[name]

    def __iter__(self):
        return iter(self.assigned)

    def __len__(self) -> int:
        return len(self.assigned)


def _out_of_memory(ename: str, evalue: str) -> bool:
    return ename == "MemoryError" or "can't allocate memory" in evalue or "out of memory" in evalue.lower()


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _stream(name: str, text: str) -> list[NotebookNode]:
    return [new_output("stream", name=name, text=text)] if text else []


class TrustedExecute(NbGraderPreprocessor):
    """Run a sanitized submission: learner cells in a sandbox, test cells in the grader."""

    memory_mb = Int(4096, help="Memory (address space) each process of a submission may use, in MiB").tag(config=True)
    max_processes = Int(256, help="Processes and threads a submission may run at once, all counted").tag(config=True)
    cell_timeout_s = Float(120.0, help="Wall time for one cell, or one call from a test, in seconds").tag(config=True)
    notebook_timeout_s = Float(600.0, help="Wall time for the whole notebook, in seconds").tag(config=True)
    isolated = Bool(True, help="Run submissions in the OS sandbox (False only for --no-isolation)").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        setup_sources = resources.get("coursekit_setup_sources")
        if setup_sources is None:
            setup_sources = self._setup_sources_from_gradebook(resources)
        cwd = resources.get("metadata", {}).get("path") or "."
        limits = Limits(memory_mb=self.memory_mb, max_processes=self.max_processes, cell_timeout_s=self.cell_timeout_s)
        how = probe() if self.isolated else NO_ISOLATION
        deadline = time.monotonic() + self.notebook_timeout_s
        status = {"status": "graded", "detail": ""}
        trusted: dict[str, Any] = {"__name__": "__grader__", "__builtins__": builtins}
        setup_done = False
        with CheckedSandbox(cwd, limits, isolation=how) as sandbox:
            for count, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), start=1):
                cell.outputs, cell.execution_count = [], count
                if status["status"] == "failed":
                    cell.outputs = [_error_output("NotRun", f"not run: {status['detail']}")]
                    continue
                try:
                    if time.monotonic() > deadline:
                        raise SandboxError(f"timed out: the whole notebook ran longer than {self.notebook_timeout_s:g} s")
                    kind = cell_kind(cell)
                    if kind == "test":
                        if not setup_done:
                            self._run_setup(setup_sources, trusted, sandbox)
                            setup_done = True
                        cell.outputs = self._run_test(cell.source, trusted, sandbox)
                    else:
                        result = sandbox.run_cell(cell.source)
                        cell.outputs = _stream("stdout", result["stdout"]) + _stream("stderr", result["stderr"])
                        if result["error"]:
                            cell.outputs.append(_error_output(*result["error"]))
                            if _out_of_memory(*result["error"]):
                                raise SandboxError(f"ran out of memory (limit {self.memory_mb} MiB)")
                except SandboxError as err:
                    status = {"status": "failed", "detail": str(err)}
                    cell.outputs.append(_error_output("GradingFailed", str(err)))
        nb.metadata["coursekit"] = status
        return nb, resources

    def _setup_sources_from_gradebook(self, resources: dict) -> list[str]:
        """The instructor's locked setup cells, in order, exactly as the gradebook holds them."""
        from nbgrader.api import Gradebook

        notebook_id = resources["nbgrader"]["notebook"]
        assignment_id = resources["nbgrader"]["assignment"]
        with Gradebook(resources["nbgrader"]["db_url"]) as gradebook:
            notebook = gradebook.find_notebook(notebook_id, assignment_id)
            cells = [c for c in notebook.source_cells if c.cell_type == "code" and c.locked]
            grade_ids = {g.name for g in notebook.grade_cells}
            return [c.source for c in cells if c.name not in grade_ids]

    @staticmethod
    def _run_setup(sources: list[str], trusted: dict[str, Any], sandbox: Sandbox) -> None:
        """Run the instructor's locked cells in the grader, so tests see the real imports and helpers.

        A locked cell may use the learner's names (they resolve through the sandbox) and may fail
        because of the learner's code; it is then skipped here, and the tests that need it fail.
        """
        from IPython.core.inputtransformer2 import TransformerManager

        transform = TransformerManager().transform_cell
        with redirect_stdout(io.StringIO()):
            for source in sources:
                code = "\n".join(line for line in transform(source).splitlines() if "get_ipython()" not in line)
                try:
                    exec(compile(code, "<setup>", "exec"), trusted, _TestNamespace(trusted, sandbox))
                except SandboxError:
                    raise
                except Exception:  # noqa: BLE001 (the learner sees the error in their own run of the cell)
                    continue

    @staticmethod
    def _run_test(source: str, trusted: dict[str, Any], sandbox: Sandbox) -> list[NotebookNode]:
        printed = io.StringIO()
        namespace = _TestNamespace(trusted, sandbox)
        try:
            with redirect_stdout(printed):
                exec(compile(source, "<test>", "exec"), trusted, namespace)  # noqa: S102 (instructor code)
        except SandboxError:
            raise
        except Exception as exc:  # the test failed: show why, as a learner would see it in Jupyter
            return _stream("stdout", printed.getvalue()) + [_error_output(type(exc).__name__, str(exc))]
        return _stream("stdout", printed.getvalue())
