"""What every check shares: the verdict types and their codes, the watch for shortcuts, fresh seeds, and calling
learner code so that nothing it raises reaches the learner bare.

A learner's function or class reaches a check either as itself (the learner runs the notebook, or
``nbgrader autograde``) or as a :class:`coursekit.autograder.sandbox.RemoteObject` (``coursekit grade``:
the learner's code runs in a sandbox process and the check in the grader). Checks are written so that both work:

- they call learner code only with plain data (tensors, numbers, strings, lists/tuples/dicts of those)
  or other learner objects, and use only what comes back (tensors arrive as detached copies);
- they call methods of returned objects (``module.load_state_dict(state)``, ``model.eval()``) and read
  attributes, but never mutate learner tensors, backpropagate through learner code, or ``isinstance`` a
  learner object against a torch class.

Helpers here (:func:`invoke`, :func:`call`, :func:`build_module`) enforce that, put every call under
:func:`forbid_shortcuts`, and turn whatever the learner's code raises into a :class:`CheckFailed` that says
what went in, what should have come out, and where it broke.

**Failure codes.** Every :class:`CheckFailed` carries a stable code (``err.code``), and its message starts with
that code in square brackets, so the code survives anything that keeps only the exception's type and text
(nbgrader's error output, ``coursekit grade``'s feedback and reports)::

    CheckFailed: [sdpa.unscaled] Your weights equal softmax(query @ key^T) with no scaling: ...

A code is lowercase dotted words, ``<task>.<mistake>`` for a named mistake (``sdpa.unscaled``,
``mask.inverted``), ``<task>.symptom.<kind>`` for a described symptom (``sdpa.symptom.masked-positions``,
``sdpa.symptom.raised``) and ``<task>.shortcut`` for an answer that called the reference.
:func:`failure_code` reads it back from such a text.
"""

from __future__ import annotations

import contextlib
import importlib.util
import linecache
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from coursekit.errors import SandboxError  # shared with the autograder's sandbox, which never imports grading

ATOL = 1e-5

_CODE = r"[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+"
CODE_PATTERN = re.compile(rf"^{_CODE}$")
_LEADING_CODE = re.compile(rf"^(?:[A-Za-z_][\w.]*: )?\[(?P<code>{_CODE})\] ")


def failure_code(text: str) -> str | None:
    """The code a failure's text starts with, or None.

    Accepts the bare message (``"[sdpa.unscaled] Your weights ..."``) and the form nbgrader and ``coursekit grade``
    record, with the exception's type in front (``"CheckFailed: [sdpa.unscaled] Your weights ..."``).
    """
    found = _LEADING_CODE.match(text.strip())
    return found["code"] if found else None


class CheckFailed(AssertionError):
    """A check found a mistake; the message says which (or describes the symptom) and how to fix it.

    Args:
        message: what the learner reads.
        code: the failure's stable code (see the module docstring); put at the start of the message. When left
            out it is read back from a message that already starts with one (an exception re-created from its text).
    """

    def __init__(self, message: str = "", code: str | None = None) -> None:
        if code is None:
            code = failure_code(message)
        elif not CODE_PATTERN.match(code):
            raise ValueError(f"not a failure code: {code!r}")
        elif failure_code(message) != code:
            message = f"[{code}] {message}"
        super().__init__(message)
        self.code = code


class ShortcutUsed(CheckFailed):
    """The answer called the reference implementation it is meant to replace."""


# ---------------------------------------------------------------------------------------------------
# No shortcuts through the reference: one policy per task
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Code a learner must not call for one task.

    Args:
        name: what the learner is told they called, e.g. ``"coursekit.attention.MultiHeadAttention"``.
        module: the module whose source file is watched, e.g. ``"coursekit.attention"`` (found without importing);
            for a package, e.g. ``"coursekit.bert"``, every module in it.
        qualnames: only these classes or functions of the module (a method counts as its class); empty = all of it.
    """

    name: str
    module: str
    qualnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShortcutPolicy:
    """What answers to one task may not call, and the building blocks they should use instead."""

    references: tuple[Reference, ...] = ()
    torch_functions: Mapping[Callable, str] = field(default_factory=dict)
    instead: str = "basic tensor operations (matmul, softmax, masked_fill, ...)"


_FUSED_ATTENTION = {
    F.scaled_dot_product_attention: "torch.nn.functional.scaled_dot_product_attention",
    F.multi_head_attention_forward: "torch.nn.MultiheadAttention",
}
_TORCH_MHA = {F.multi_head_attention_forward: "torch.nn.MultiheadAttention"}

_POLICIES: dict[str, ShortcutPolicy] = {}
_PREFIXES: dict[str, str] = {}
# The policy of a task that registered none: the original one, all of coursekit.attention and torch's fused attention.
_DEFAULT_POLICY = ShortcutPolicy((Reference("coursekit.attention", "coursekit.attention"),), _FUSED_ATTENTION)


def register_task(task: str, policy: ShortcutPolicy, code: str = "task") -> str:
    """Declare what answers to ``task`` may not call; returns ``task`` (so a module can write ``TASK = register_task(...)``).

    ``code`` is the first word of the task's failure codes (``"sdpa"`` gives ``sdpa.shortcut``,
    ``sdpa.symptom.raised``, ...). The task string travels to the sandbox with every remote call, and the sandbox
    imports this package, so the policy applies there too.
    """
    if not re.fullmatch(r"[a-z][a-z0-9-]*", code):
        raise ValueError(f"a task's code is one lowercase word (hyphens allowed): {code!r}")
    _POLICIES[task] = policy
    _PREFIXES[task] = code
    return task


def task_code(task: str) -> str:
    """The first word of ``task``'s failure codes, e.g. ``"sdpa"``."""
    return _PREFIXES.get(task, "task")


def fused_attention() -> dict[Callable, str]:
    """torch's fused attention and ``nn.MultiheadAttention``, as a ``torch_functions`` mapping."""
    return dict(_FUSED_ATTENTION)


def torch_multihead() -> dict[Callable, str]:
    """``nn.MultiheadAttention`` only (its forward goes through ``F.multi_head_attention_forward``)."""
    return dict(_TORCH_MHA)


def _module_files(module: str) -> set[str]:
    """The source file(s) of ``module`` without importing it (a module that is not installed has none)."""
    head, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(head)
    except (ImportError, ValueError):
        return set()
    if spec is None:
        return set()
    if not rest:
        paths = [spec.origin] if spec.origin else []
    else:
        roots = list(spec.submodule_search_locations or [])
        parts = rest.split(".")
        paths = [os.path.join(root, *parts[:-1], parts[-1] + ".py") for root in roots]
        paths += [os.path.join(root, *parts, "__init__.py") for root in roots]
    found = set()
    for path in paths:
        if path and os.path.exists(path):
            inside = [str(p) for p in Path(path).parent.rglob("*.py")] if path.endswith("__init__.py") else [path]
            found |= set(inside) | {os.path.realpath(p) for p in inside}
    return found


@dataclass
class _Watch:
    files: dict[str, list[Reference]]

    @classmethod
    def of(cls, policy: ShortcutPolicy) -> _Watch:
        files: dict[str, list[Reference]] = {}
        for reference in policy.references:
            for path in _module_files(reference.module):
                files.setdefault(path, []).append(reference)
        return cls(files)


_WATCHES: dict[str, _Watch] = {}


def _qualname(frame) -> str:
    code = frame.f_code
    qualname = getattr(code, "co_qualname", None)  # Python 3.11+
    if qualname is not None:
        return qualname
    owner = frame.f_locals.get("self", frame.f_locals.get("cls"))
    klass = owner if isinstance(owner, type) else type(owner) if owner is not None else None
    for base in getattr(klass, "__mro__", ()):
        member = base.__dict__.get(code.co_name)
        if getattr(getattr(member, "__func__", member), "__code__", None) is code:
            return f"{base.__name__}.{code.co_name}"
    return code.co_name


def _matches(reference: Reference, qualname: str) -> bool:
    return not reference.qualnames or any(qualname == q or qualname.startswith(q + ".") for q in reference.qualnames)


class _TorchShortcutSpy(TorchFunctionMode):
    def __init__(self, forbidden: Mapping[Callable, str]) -> None:
        super().__init__()
        self.forbidden = forbidden
        self.used: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.forbidden:
            self.used.append(self.forbidden[func])
        return func(*args, **(kwargs or {}))


_remote = threading.local()


@contextlib.contextmanager
def remote_task(task: str | None) -> Iterator[None]:
    """While active, :func:`current_task` is ``task``: the autograder's sandbox sends it with each call into
    learner code, and runs the call under ``forbid_shortcuts(task)`` there (:mod:`coursekit.autograder.execute`)."""
    previous = getattr(_remote, "task", None)
    _remote.task = task
    try:
        yield
    finally:
        _remote.task = previous


def current_task() -> str | None:
    """The task whose shortcut watch is active in this thread, or None."""
    return getattr(_remote, "task", None)


@contextlib.contextmanager
def forbid_shortcuts(task: str) -> Iterator[None]:
    """Run the learner's code while watching for calls into the reference it must not use for ``task``.

    Torch functions are caught through a ``TorchFunctionMode`` (whatever name the learner bound them to);
    Python code (coursekit's reference, torch's modules) by watching which functions run (``sys.setprofile``).

    Raises:
        ShortcutUsed: after the block, if the code called a forbidden implementation.
    """
    policy = _POLICIES.get(task, _DEFAULT_POLICY)
    watch = _WATCHES.get(task)
    if watch is None:
        watch = _WATCHES[task] = _Watch.of(policy)
    reached: list[str] = []

    def profile(frame, event, arg):
        if event == "call":
            references = watch.files.get(frame.f_code.co_filename)
            if references:
                qualname = _qualname(frame)
                reached.extend(r.name for r in references if _matches(r, qualname))

    previous = sys.getprofile()
    spy = _TorchShortcutSpy(policy.torch_functions)
    sys.setprofile(profile)
    def shortcut() -> ShortcutUsed | None:
        used = sorted(set(reached) | set(spy.used))
        if not used:
            return None
        return ShortcutUsed(
            f"Your answer calls {', '.join(used)}, which already implements {task}. This part earns no "
            f"points until you write it yourself with {policy.instead}.", code=f"{task_code(task)}.shortcut"
        )

    try:
        # remote_task: when the autograder hands a test a proxy for the learner's function, the same
        # watch runs in the learner's process around each call (coursekit.autograder.sandbox).
        with spy, remote_task(task):
            yield
    except Exception as err:
        sys.setprofile(previous)
        used = shortcut()
        if used is not None and not isinstance(err, ShortcutUsed):
            raise used from None  # calling the reference is the verdict, whatever it raised afterwards
        # Here, in whichever process ran the learner's code, its traceback is still at hand: note the learner's
        # line in the message, the one part of an exception that reaches the grader from the sandbox.
        _note_learner_line(err)
        raise
    finally:
        sys.setprofile(previous)
    used = shortcut()
    if used is not None:
        raise used


# ---------------------------------------------------------------------------------------------------
# Where learner code broke
# ---------------------------------------------------------------------------------------------------

_LINE_NOTE = " \u27e8at "  # " ⟨at LOCATION⟩" closes a learner exception's first line once its line is known
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBRARY_DIRS = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, _PACKAGE_DIR)})


def _is_learner_file(filename: str) -> bool:
    if filename.startswith("<") and not filename.startswith("<ipython-input"):
        return False  # <frozen ...>, <string>: not code a learner typed
    path = os.path.realpath(filename) if not filename.startswith("<") else filename
    return not any(path == d or path.startswith(d + os.sep) for d in _LIBRARY_DIRS)


def learner_line(err: BaseException) -> str | None:
    """Where in the learner's own code ``err`` was raised: the innermost frame outside torch, Python and coursekit."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if _is_learner_file(f.filename)]
    if not frames:
        return None
    frame = frames[-1]
    text = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    place = f"line {frame.lineno} of {frame.name}" if frame.name != "<module>" else f"line {frame.lineno}"
    return f"{place}: {text}" if text else place


def _note_learner_line(err: BaseException) -> None:
    if isinstance(err, (CheckFailed, NotImplementedError)) or not err.args or not isinstance(err.args[0], str):
        return
    if _LINE_NOTE in err.args[0]:
        return
    line = learner_line(err)
    if line:
        first, sep, rest = err.args[0].partition("\n")
        with contextlib.suppress(Exception):
            err.args = (f"{first}{_LINE_NOTE}{line}\u27e9{sep}{rest}", *err.args[1:])


# ---------------------------------------------------------------------------------------------------
# Seeds and messages
# ---------------------------------------------------------------------------------------------------


def fresh_seed() -> int:
    """A seed no one could have guessed when the notebook was written."""
    return int.from_bytes(os.urandom(4), "little")


def seed_or_fresh(seed: int | None) -> int:
    return fresh_seed() if seed is None else int(seed)


def where(seed: int) -> str:
    """The sentence that ends every failure: how to reproduce it."""
    return f"(inputs drawn with seed={seed}; call the check again with seed={seed} to reproduce)"


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed % 2**63)


def shape_of(x: Any) -> str:
    """``(2, 3)`` for a tensor, the type's name for anything else."""
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape))
    return f"a {type(x).__name__}"


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), without the learner's line."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    text = lines[0].split(_LINE_NOTE)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def where_it_broke(err: BaseException) -> str | None:
    """The learner's line that raised ``err`` (noted by :func:`forbid_shortcuts`, here or in the sandbox)."""
    text = str(err)
    if _LINE_NOTE in text:
        return text.split(_LINE_NOTE, 1)[1].split("\u27e9", 1)[0]
    return learner_line(err)


def max_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().nan_to_num(float("inf")).max()) if a.numel() else 0.0


def close(a: Any, b: torch.Tensor, atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    """Same shape and values within tolerance; False for anything that is not a tensor."""
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol)))


# ---------------------------------------------------------------------------------------------------
# Calling learner code: plain data in, plain data out
# ---------------------------------------------------------------------------------------------------


def _copies(value: Any) -> Any:
    """Fresh copies of the tensors in ``value``, so learner code that writes in place cannot change the check's."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [_copies(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_copies(v) for v in value)
    if isinstance(value, dict):
        return {k: _copies(v) for k, v in value.items()}
    return value


def detached(value: Any) -> Any:
    """Tensors detached from any graph (they already are when they come from the sandbox)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, list):
        return [detached(v) for v in value]
    if isinstance(value, tuple):
        return tuple(detached(v) for v in value)  # named tuples become plain tuples, as from the sandbox
    if isinstance(value, dict):
        return {k: detached(v) for k, v in value.items()}
    return value


def describe_value(value: Any) -> str:
    """How a message shows one input: a tensor's shape (and dtype unless float32), a number, a list's length."""
    if isinstance(value, torch.Tensor):
        dtype = "" if value.dtype == torch.float32 else f" {str(value.dtype).removeprefix('torch.')}"
        return f"{tuple(value.shape)}{dtype}"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, Mapping):
        return f"a dict of {len(value)}"
    return f"your {getattr(value, '_typename', type(value).__name__)}"


def describe_inputs(args: Sequence[Any], kwargs: Mapping[str, Any], params: Sequence[str] = ()) -> str:
    """``"query (3, 5, 16), key (3, 7, 16), key_padding_mask (3, 7) bool"``: what a call handed the learner."""
    named = [(params[i] if i < len(params) else f"argument {i + 1}", a) for i, a in enumerate(args)]
    named += [(k, v) for k, v in kwargs.items() if v is not None]
    parts = [f"{name} {describe_value(v)}" if isinstance(v, torch.Tensor) or describe_value(v).startswith("a ")
             else f"{name}={describe_value(v)}" for name, v in named]
    return ", ".join(parts) if parts else "no arguments"


def learner_error(err: BaseException, task: str, *, name: str, inputs: str, expect: str = "",
                  seed: int | None = None, prefix: str | None = None) -> CheckFailed:
    """The sentence a learner reads when their code raised: the error, the line, the inputs and what was expected."""
    ename = getattr(err, "ename", type(err).__name__)  # a sandbox RemoteError keeps the learner's exception type
    message = first_line(err)
    if ename != type(err).__name__ and message.startswith(f"{ename}: "):
        message = message[len(ename) + 2:]
    message = message[:-1] if message.endswith(".") and not message.endswith("...") else message
    line = where_it_broke(err)
    text = f"{name} raised {ename}: {message}"
    text += f" (at {line})" if line else ""
    text += f". It was called with {inputs}"
    text += f" and should return {expect}." if expect else "."
    if isinstance(err, MemoryError) or "out of memory" in message.lower():
        text += " It ran out of memory: look for a tensor that grows with every dimension at once."
    code = f"{prefix or task_code(task)}.symptom.raised"
    return CheckFailed(f"{text} {where(seed)}" if seed is not None else text, code=code)


def invoke(fn: Callable, task: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
           name: str = "Your code", params: Sequence[str] = (), expect: str = "", seed: int | None = None) -> Any:
    """Call learner code under :func:`forbid_shortcuts` with copies of the arguments and return plain data.

    Whatever the learner's code raises becomes a :class:`CheckFailed` (code ``<task>.symptom.raised``) that names
    the error, the learner's line that raised it, the inputs (``params`` names the positional ones) and what the
    call should return (``expect``). ``NotImplementedError`` (an answer not written yet), a :class:`CheckFailed`
    and a failure of the sandbox itself pass through unchanged.
    """
    kwargs = dict(kwargs or {})
    try:
        with forbid_shortcuts(task):
            result = fn(*_copies(tuple(args)), **_copies(kwargs))
    except (CheckFailed, NotImplementedError, SandboxError):
        raise
    except Exception as err:  # noqa: BLE001 (anything the learner's code raises is reported, never re-raised bare)
        raise learner_error(err, task, name=name, inputs=describe_inputs(args, kwargs, params), expect=expect,
                            seed=seed) from None
    return detached(result)


def call(fn: Callable, task: str, *args: Any, **kwargs: Any) -> Any:
    """:func:`invoke` with the arguments written out, for a call whose inputs need no names."""
    return invoke(fn, task, args, kwargs)


def expect_tensor(result: Any, what: str, task: str) -> torch.Tensor:
    if not isinstance(result, torch.Tensor):
        raise CheckFailed(f"{what} must be a tensor; yours is {shape_of(result)}.",
                          code=f"{task_code(task)}.symptom.return-type")
    return result


def expect_pair(result: Any, task: str, what: str = "Your function") -> tuple[torch.Tensor, torch.Tensor]:
    """Check that learner code returned ``(output, weights)``, two tensors, as ``nn.MultiheadAttention`` does."""
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, torch.Tensor) for r in result)):
        if isinstance(result, torch.Tensor):
            kind = f"one tensor of shape {tuple(result.shape)}"
        elif isinstance(result, tuple):
            kind = f"a tuple of {len(result)}: {', '.join(shape_of(r) for r in result)}"
        else:
            kind = shape_of(result)
        raise CheckFailed(f"{what} returned {kind}; it must return a tuple (output, weights) of two tensors.",
                          code=f"{task_code(task)}.symptom.return-type")
    return result


def build_module(cls: Callable, task: str, reference: torch.nn.Module | Mapping[str, torch.Tensor], *args: Any,
                 name: str | None = None, **kwargs: Any) -> Any:
    """Construct the learner's module with ``args`` and give it exactly the reference's weights.

    ``reference`` is a module or its state dict. Works for a local class and for a sandbox proxy alike: the
    weights travel as a plain state dict. The module is put in eval mode (dropout off) and returned.
    """
    label = name or getattr(cls, "__name__", None) or getattr(cls, "_typename", "class")
    module = invoke(cls, task, args, kwargs, name=f"Building your {label}")
    source = reference.state_dict() if isinstance(reference, torch.nn.Module) else reference
    state = {k: v.detach().clone() for k, v in source.items()}
    try:
        with forbid_shortcuts(task):
            module.load_state_dict(state)
    except (CheckFailed, NotImplementedError, SandboxError):
        raise
    except Exception as err:  # noqa: BLE001 (missing, renamed or resized parameters, or no load_state_dict at all)
        said = " ".join(str(err).split(_LINE_NOTE)[0].split())
        said = said if len(said) <= 400 else said[:397] + "..."
        raise CheckFailed(
            f"Could not give your {label} the reference's weights ({said}). Keep the parameters the notebook's "
            f"__init__ creates ({', '.join(sorted({k.split('.')[0] for k in state}))}), with their names "
            "and sizes, and add no others.", code=f"{task_code(task)}.symptom.parameters"
        ) from None
    invoke(lambda: module.eval(), task, name=f"Your {label}'s eval()")
    return module


def seeded_module(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Build a reference module with weights drawn from ``seed``, leaving torch's global generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        module = factory()
    return module.eval()


def softmax_rows_ok(weights: torch.Tensor, atol: float = 1e-4) -> bool:
    return bool(torch.allclose(weights.sum(-1), torch.ones(()), atol=atol))


# ---------------------------------------------------------------------------------------------------
# Trained models: exact match on held-out pairs, by greedy decoding through the model's own interface
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutScore:
    """How a trained model did on every held-out pair: the share exactly right, and a few it got wrong."""

    exact: float
    count: int
    wrong: tuple[tuple[str, str, str], ...]  # (source, the model's output, the expected output), at most 3

    def examples(self) -> str:
        return "; ".join(f"{src!r} -> {got!r} instead of {want!r}" for src, got, want in self.wrong)


def held_out_exact_match(model: Any, task: Any, policy_task: str, prefix: str, name: str = "Your model",
                         batch_size: int = 128) -> HeldOutScore:
    """Greedy-decode EVERY held-out pair of ``task`` (a :class:`coursekit.data.Task`: valid and test splits) and
    score the share decoded exactly right, [STOP] included.

    Scoring the whole held-out set, in a fixed order, makes the verdict a property of the trained model alone: no
    seed chooses which pairs count. Batches of ``batch_size`` keep a learner's broadcasting slip from asking for
    gigabytes. The model is used only through ``eval()``, ``encode`` and ``decode_step`` (works on sandbox proxies),
    under the shortcut watch of ``policy_task``; an error in it gets the code ``<prefix>.symptom.raised``.
    """
    from coursekit.data import collate_pairs
    from coursekit.decoding import greedy_decode
    from coursekit.train import sequences_equal

    pairs = list(task.valid) + list(task.test)
    vocab = task.tgt_vocab
    right, rows = [], []
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[start:start + batch_size], task.src_vocab, task.tgt_vocab)
        try:
            with forbid_shortcuts(policy_task):
                model.eval()
                decoded = greedy_decode(model, batch.src, batch.src_key_padding_mask, start_id=vocab.start_id,
                                        stop_id=vocab.stop_id, max_len=batch.tgt_out.size(1) + 2, pad_id=vocab.pad_id)
        except (CheckFailed, NotImplementedError, SandboxError):
            raise
        except Exception as err:  # noqa: BLE001 (the learner's model raised while translating)
            inputs = describe_inputs((batch.src, batch.src_key_padding_mask), {}, ("src", "src_key_padding_mask"))
            raise learner_error(err, policy_task, name=f"{name}, translating the held-out set by greedy decoding,",
                                inputs=inputs, prefix=prefix) from None
        right += sequences_equal(decoded.tokens, batch.tgt_out, pad_id=vocab.pad_id).tolist()
        rows += list(decoded.tokens)
    join = (lambda tokens: "".join(tokens)) if all(len(t) == 1 for t in vocab.tokens[4:]) else " ".join
    wrong = tuple((join(src), join(vocab.decode(row)), join(want))
                  for (src, want), row, ok in zip(pairs, rows, right) if not ok)[:3]
    return HeldOutScore(sum(right) / len(right), len(pairs), wrong)
