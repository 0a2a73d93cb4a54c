"""What every check shares: the verdict types, the watch for shortcuts, fresh seeds, and calling learner code.

A learner's function or class reaches a check either as itself (the learner runs the notebook, or
``nbgrader autograde``) or as a :class:`coursekit.autograder.sandbox.RemoteObject` (``coursekit grade``:
the learner's code runs in a sandbox process and the check in the grader). Checks are written so that both work:

- they call learner code only with plain data (tensors, numbers, strings, lists/tuples/dicts of those)
  or other learner objects, and use only what comes back (tensors arrive as detached copies);
- they call methods of returned objects (``module.load_state_dict(state)``, ``model.eval()``) and read
  attributes, but never mutate learner tensors, backpropagate through learner code, or ``isinstance`` a
  learner object against a torch class.

Helpers here (:func:`call`, :func:`build_module`) enforce that and put every call under
:func:`forbid_shortcuts`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

ATOL = 1e-5


class CheckFailed(AssertionError):
    """A check found a mistake; the message says which and how to fix it."""


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
# The policy of a task that registered none: the original one, all of coursekit.attention and torch's fused attention.
_DEFAULT_POLICY = ShortcutPolicy((Reference("coursekit.attention", "coursekit.attention"),), _FUSED_ATTENTION)


def register_task(task: str, policy: ShortcutPolicy) -> str:
    """Declare what answers to ``task`` may not call; returns ``task`` (so a module can write ``TASK = register_task(...)``).

    The task string travels to the sandbox with every remote call, and the sandbox imports this package, so
    the policy applies there too.
    """
    _POLICIES[task] = policy
    return task


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
    try:
        # remote_task: when the autograder hands a test a proxy for the learner's function, the same
        # watch runs in the learner's process around each call (coursekit.autograder.sandbox).
        with spy, remote_task(task):
            yield
    finally:
        sys.setprofile(previous)
    used = sorted(set(reached) | set(spy.used))
    if used:
        raise ShortcutUsed(
            f"Your answer calls {', '.join(used)}, which already implements {task}. This part earns no "
            f"points until you write it yourself with {policy.instead}."
        )


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
    """The first line of an exception's message (its type's name when it has none)."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


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


def call(fn: Callable, task: str, *args: Any, **kwargs: Any) -> Any:
    """Call learner code under :func:`forbid_shortcuts` with copies of the arguments; return plain data."""
    with forbid_shortcuts(task):
        result = fn(*_copies(args), **_copies(kwargs))
    return detached(result)


def expect_tensor(result: Any, what: str) -> torch.Tensor:
    if not isinstance(result, torch.Tensor):
        raise CheckFailed(f"{what} must be a tensor; yours is {shape_of(result)}.")
    return result


def expect_pair(result: Any, what: str = "Your function") -> tuple[torch.Tensor, torch.Tensor]:
    """Check that learner code returned ``(output, weights)``, two tensors, as ``nn.MultiheadAttention`` does."""
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, torch.Tensor) for r in result)):
        kind = type(result).__name__ if not isinstance(result, tuple) else f"a tuple of {len(result)}"
        raise CheckFailed(f"{what} returned {kind}; it must return a tuple (output, weights) of two tensors.")
    return result


def build_module(cls: Callable, task: str, reference: torch.nn.Module | Mapping[str, torch.Tensor], *args: Any,
                 **kwargs: Any) -> Any:
    """Construct the learner's module with ``args`` and give it exactly the reference's weights.

    ``reference`` is a module or its state dict. Works for a local class and for a sandbox proxy alike: the
    weights travel as a plain state dict. The module is put in eval mode (dropout off) and returned.
    """
    module = call(cls, task, *args, **kwargs)
    source = reference.state_dict() if isinstance(reference, torch.nn.Module) else reference
    state = {k: v.detach().clone() for k, v in source.items()}
    try:
        with forbid_shortcuts(task):
            module.load_state_dict(state)
    except NotImplementedError:
        raise
    except (RuntimeError, KeyError, TypeError, AttributeError) as err:
        first = first_line(err, 300)
        raise CheckFailed(
            f"Could not give your module the reference's weights ({first}). Keep the parameters the notebook's "
            f"__init__ creates ({', '.join(sorted({k.split('.')[0] for k in state}))}), with their names "
            "and sizes, and add no others."
        ) from None
    with forbid_shortcuts(task):
        module.eval()
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


def held_out_exact_match(model: Any, task: Any, seed: int, n: int, policy_task: str) -> tuple[float, int]:
    """Fraction of ``n`` held-out pairs of ``task`` (a :class:`coursekit.data.Task`) that greedy decoding gets
    exactly right, [STOP] included.

    ``seed=0`` takes the first ``n`` test pairs; other seeds draw ``n`` of the valid and test pairs at random.
    The model is used only through ``eval()``, ``encode`` and ``decode_step`` (works on sandbox proxies), under
    the shortcut watch of ``policy_task``.
    """
    from coursekit.data import collate_pairs
    from coursekit.decoding import greedy_decode
    from coursekit.train import sequences_equal

    held_out = list(task.test) + list(task.valid)
    if seed == 0:
        pairs = list(task.test[:n])
    else:
        order = torch.randperm(len(held_out), generator=generator(seed))[:n]
        pairs = [held_out[i] for i in order.tolist()]
    batch = collate_pairs(pairs, task.src_vocab, task.tgt_vocab)
    vocab = task.tgt_vocab
    with forbid_shortcuts(policy_task):
        model.eval()
        decoded = greedy_decode(model, batch.src, batch.src_key_padding_mask, start_id=vocab.start_id,
                                stop_id=vocab.stop_id, max_len=batch.tgt_out.size(1) + 2, pad_id=vocab.pad_id)
    exact = float(sequences_equal(decoded.tokens, batch.tgt_out, pad_id=vocab.pad_id).float().mean())
    return exact, len(pairs)
