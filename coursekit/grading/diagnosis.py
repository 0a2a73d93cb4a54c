"""Naming a learner's mistake only when it is established, and describing it exactly when it is not.

A check runs the learner's code and the reference on the same inputs. When the two disagree it asks a
:class:`Catalogue`: each task keeps one, a list of :class:`Mutant` s, realistic mistakes written as small
variations of the reference (softmax over the wrong dim, the mask read the other way round, a norm in the wrong
place). The check names a mistake only when the learner's outputs match that mutant's, within tolerance, on every
input the check tried, and match no other mutant. Otherwise it describes the symptom (:func:`describe`): which
entries differ and how (only at masked positions, only one row, a constant factor, another order, NaN from some
position on, a shape with two dimensions swapped), and names no cause it has not established.

Every failure carries a stable code (see :mod:`coursekit.grading.core`): ``<task>.<mistake>`` for a named
mistake, ``<task>.symptom.<kind>`` for a symptom. The kinds :func:`describe` reports are listed in
:data:`SYMPTOM_KINDS`.

Recipe: adding a task's catalogue (for the author of the next graded notebook)
-----------------------------------------------------------------------------
1. **Register the task** with its own code word: ``MY_TASK = register_task("my task", policy, code="mytask")``.
   Every failure code of the task starts with that word.
2. **Draw the inputs in one function of the seed**, ``probes(seed) -> list[dict]``, one dict of named inputs per
   call the check makes. Choose sizes so that no two dimensions are equal (B, T, S, D, H, Dh ... all different) and
   no quantity coincides with another at those sizes: then a transposed result, or a scale by the wrong dimension,
   shows as itself and nothing else. Give each probe every input the reference and the mutants read.
3. **Write the reference and each mutant as functions of those named inputs** (``def mutant(query, key, **_)``),
   returning what the learner's code returns (a tensor, a tuple, a list). A mutant is the reference with ONE
   realistic mistake, as learners write it: take them from forums, course issue trackers, and the classic bugs of
   the model (wrong dim, wrong axis, transposed, copy-paste between projections, off-by-one, wrong reduction).
   Give it a stable code and a sentence that says what the learner's output shows they did and how to fix it;
   say only what matching the mutant establishes.
4. **Build the catalogue** with :func:`catalogue` (it registers it for the tests) and, in the check, call the
   learner on each probe with :func:`~coursekit.grading.core.invoke` (never directly: it turns whatever the
   learner's code raises into a sentence with the inputs, the expected output and the line that broke), then
   ``CATALOGUE.judge(outputs, probes, seed=seed, describe=...)``: it passes, names the one matching mutant, or
   raises the symptom ``describe`` finds.
5. **Describe what no mutant explains** with :func:`describe` (give it the axes' names and the named sizes, and the
   mask's forbidden positions if any), and give each other way a check can fail a code from
   :data:`SYMPTOM_KINDS`. A message that sends the learner to another test says whether that test passes
   (:func:`quietly_passes`).
6. **Random outputs** (a masking rule, sampled pairs) cannot be matched value by value: check properties on a large
   sample, with tolerances several standard deviations wide, and give each property that fails its own code, a
   mistake's name only when the property pins the mistake down (``masking.specials-chosen``), a symptom otherwise.
   A function told to be reproducible from its seed is called twice with it, and once with another.
7. **Test it**: ``tests/test_grading_catalogues.py`` runs every registered catalogue over many seeds and fails when
   a mutant would pass the check or cannot be told from another mutant at the check's sizes; add the check to
   the seed sweep (``tests/test_grading_seeds.py``) and its learner to the sandbox cases
   (``tests/test_grading_proxies.py``), and add at least eight realistic mistakes to the notebook's corpus
   (``tests/mistakes.py``), each of which must lose points, not all of them, with its own name or an accurate
   symptom, the same through ``coursekit check``, ``coursekit grade`` and every seed of the hidden tests
   (``tests/test_notebooks.py`` runs them all).

Where the code appears: ``CheckFailed.code``, and the first thing in the message, ``[code] `` (so nbgrader's
``CheckFailed: [sdpa.unscaled] Your weights ...``); :func:`coursekit.grading.failure_code` reads it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from coursekit.grading.core import CODE_PATTERN, CheckFailed, shape_of, where

SYMPTOM_KINDS = {
    "raised": "the learner's code raised an exception (the message gives it, the inputs and the line)",
    "return-type": "the code returned something other than what the task asks for (a tensor, a pair, a list)",
    "parameters": "the module's parameters could not receive the reference's weights",
    "shape": "a result has the wrong shape",
    "dtype": "a result has the wrong kind of values (bool, integer or float)",
    "nan": "a result holds NaN where the expected one holds a number",
    "inf": "a result holds an infinity where the expected one holds a number",
    "masked-positions": "a result differs only at the positions a mask hides",
    "unmasked-positions": "a result differs only at the positions a mask allows",
    "transposed": "a result holds the expected values with its last two dimensions swapped",
    "order": "a result holds the expected slices in another order along one dimension",
    "scale": "every entry is the expected one times the same factor",
    "shift": "every entry is the expected one plus the same constant",
    "partial": "only some rows, positions or heads differ (the message lists which)",
    "everywhere": "the result differs almost everywhere, with no simpler pattern",
    "values": "a value (a count, a proportion, a list) differs from the expected one",
    "leak": "information flows where a mask or the task forbids it",
    "low-score": "a trained model scores below the bar",
    "not-reproducible": "the same seed gives different results",
    "not-equivariant": "shuffling the input positions changes more than the order of the output rows",
}


# ---------------------------------------------------------------------------------------------------
# Comparing results
# ---------------------------------------------------------------------------------------------------


def same(got: Any, want: Any, atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    """Equal in structure, shape and value (within tolerance; NaN equals NaN). Any structure of tensors, numbers,
    strings, lists, tuples and dicts."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return False
        if want.dtype == torch.bool or not want.is_floating_point():
            return got.dtype == want.dtype and bool(torch.equal(got, want))
        if not got.is_floating_point():
            return False
        return bool(torch.allclose(got.double(), want.double(), atol=atol, rtol=rtol, equal_nan=True))
    if isinstance(want, (list, tuple)):
        return (isinstance(got, (list, tuple)) and len(got) == len(want)
                and all(same(g, w, atol, rtol) for g, w in zip(got, want)))
    if isinstance(want, Mapping):
        return (isinstance(got, Mapping) and set(got) == set(want)
                and all(same(got[k], want[k], atol, rtol) for k in want))
    if isinstance(want, float) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=rtol, abs_tol=atol) or (math.isnan(got) and math.isnan(want))
    return type(got) is type(want) and got == want


# ---------------------------------------------------------------------------------------------------
# Mutants and catalogues
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """One realistic mistake: the reference with one thing done wrong.

    Args:
        code: stable, ``<task>.<mistake>`` (e.g. ``"sdpa.unscaled"``, ``"mask.inverted"``).
        says: what the learner reads when their output matches: what it shows they did, and the fix.
        output: the mistaken result, from the same named inputs as the reference (a function of ``**probe``).
    """

    code: str
    says: str
    output: Callable[..., Any]
    atol: float | None = None  # a looser tolerance for this mutant alone (one whose float32 results spread more)


@dataclass(frozen=True)
class Symptom:
    """What a wrong result looks like, when no mutant explains it: a kind (see :data:`SYMPTOM_KINDS`) and a sentence."""

    kind: str
    text: str


_CATALOGUES: dict[str, Catalogue] = {}


@dataclass(frozen=True)
class Catalogue:
    """The mistakes a check can name, the inputs it draws, and the rule for passing.

    Args:
        name: unique, for tests and reports, e.g. ``"sdpa.values"``.
        prefix: the task's code word, e.g. ``"sdpa"``; symptoms get ``<prefix>.symptom.<kind>``.
        reference: the right result from the named inputs of one probe.
        mutants: the realistic mistakes this check can name.
        probes: ``seed -> list of probes``; the check calls the learner once per probe, in order.
        accept: ``(got, want) -> bool``, whether a result passes; :func:`same` within ``atol``/``rtol`` by default.
            A check that looks at one property only (the shapes, say) passes on that property, but names mutants
            by their whole output.
        atol, rtol: the tolerance of "matches" for the reference and for every mutant.
    """

    name: str
    prefix: str
    reference: Callable[..., Any]
    mutants: tuple[Mutant, ...]
    probes: Callable[[int], list[dict[str, Any]]]
    accept: Callable[[Any, Any], bool] | None = None
    atol: float = 1e-4
    rtol: float = 1e-4
    _codes: tuple[str, ...] = field(default=(), repr=False)

    def expected(self, probe: Mapping[str, Any]) -> Any:
        return self.reference(**probe)

    def passes(self, got: Any, probe: Mapping[str, Any]) -> bool:
        want = self.expected(probe)
        return self.accept(got, want) if self.accept else same(got, want, self.atol, self.rtol)

    def output_of(self, mutant: Mutant, probe: Mapping[str, Any]) -> Any:
        """A mutant's result; None where the mistake raises at these inputs (then nothing can match it)."""
        try:
            with torch.no_grad():
                return mutant.output(**probe)
        except Exception:  # noqa: BLE001 (a mutant that cannot run on a probe cannot be named from it)
            return None

    def matching(self, outputs: Sequence[Any], probes: Sequence[Mapping[str, Any]]) -> list[Mutant]:
        """The mutants whose results match the learner's on every probe tried (``outputs[i]`` for ``probes[i]``)."""
        found = []
        for mutant in self.mutants:
            results = [self.output_of(mutant, p) for p in probes[: len(outputs)]]
            atol = self.atol if mutant.atol is None else mutant.atol
            if all(r is not None and same(got, r, atol, self.rtol) for got, r in zip(outputs, results)):
                found.append(mutant)
        return found

    def judge(self, outputs: Sequence[Any], probes: Sequence[Mapping[str, Any]], *, seed: int,
              describe: Callable[[Any, Any, Mapping[str, Any]], Symptom], context: str = "",
              then: Callable[[], str] | None = None) -> None:
        """Pass when every output passes; otherwise raise :class:`CheckFailed` naming the one mutant that matches on
        every probe, or else the symptom ``describe(got, want, probe)`` finds at the first probe that fails.

        ``context`` starts the symptom's sentence (``"With key_padding_mask,"``); ``then()``, if given, adds a
        sentence after the diagnosis, named or not (e.g. which other tests pass).
        """
        failing = [i for i, (got, probe) in enumerate(zip(outputs, probes)) if not self.passes(got, probe)]
        if not failing:
            return
        named = self.matching(outputs, probes)
        if len(named) == 1:
            says = f"{named[0].says} {then()}" if then else named[0].says
            raise CheckFailed(f"{says} {where(seed)}", code=named[0].code)
        i = failing[0]
        symptom = describe(outputs[i], self.expected(probes[i]), probes[i])
        raise self.symptom(Symptom(symptom.kind, f"{symptom.text} {then()}" if then else symptom.text), seed, context)

    def symptom(self, symptom: Symptom, seed: int | None, context: str = "") -> CheckFailed:
        """The failure for a symptom of this catalogue's task: code ``<prefix>.symptom.<kind>``."""
        return symptom_failure(self.prefix, symptom, seed, context)


def symptom_failure(prefix: str, symptom: Symptom, seed: int | None, context: str = "") -> CheckFailed:
    """A :class:`CheckFailed` for ``symptom``, with code ``<prefix>.symptom.<kind>`` and the seed sentence."""
    if symptom.kind not in SYMPTOM_KINDS:
        raise ValueError(f"unknown symptom kind {symptom.kind!r}; add it to SYMPTOM_KINDS")
    body = symptom.text
    if context and body.startswith(("Your ", "The ")):
        body = body[0].lower() + body[1:]
    text = f"{context} {body}".strip() if context else body
    text = text[0].upper() + text[1:]
    return CheckFailed(f"{text} {where(seed)}" if seed is not None else text, code=f"{prefix}.symptom.{symptom.kind}")


def quietly_passes(check: Callable[..., None], answer: Any, seed: int) -> bool:
    """Whether ``check(answer, seed=seed)`` passes, its output hidden: so a message that sends the learner to
    another test can say whether that test passes."""
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check(answer, seed=seed)
    except CheckFailed:
        return False
    return True


def catalogue(name: str, prefix: str, reference: Callable[..., Any], mutants: Sequence[Mutant],
              probes: Callable[[int], list[dict[str, Any]]], **options: Any) -> Catalogue:
    """Build a :class:`Catalogue` and register it, so that ``tests/test_grading_catalogues.py`` tests it.

    Raises:
        ValueError: a mutant's code is malformed or used twice.
    """
    codes = [m.code for m in mutants]
    bad = [c for c in codes if not CODE_PATTERN.match(c)]
    if bad or len(set(codes)) != len(codes):
        raise ValueError(f"catalogue {name}: malformed or repeated codes {bad or codes}")
    if name in _CATALOGUES:
        raise ValueError(f"a catalogue named {name} exists already")
    built = Catalogue(name, prefix, reference, tuple(mutants), probes, **options)
    _CATALOGUES[name] = built
    return built


def catalogues() -> dict[str, Catalogue]:
    """Every registered catalogue, by name."""
    return dict(_CATALOGUES)


# ---------------------------------------------------------------------------------------------------
# Describing a wrong tensor
# ---------------------------------------------------------------------------------------------------


def letters(shape: Sequence[int], sizes: Mapping[str, int]) -> str | None:
    """``(3, 7, 5)`` as ``"(B, S, T)"`` when every dimension is one of ``sizes`` and the sizes are all different."""
    by_size: dict[int, list[str]] = {}
    for name, n in sizes.items():
        by_size.setdefault(n, []).append(name)
    if any(len(names) > 1 for names in by_size.values()) or any(n not in by_size for n in shape):
        return None
    return "(" + ", ".join(by_size[n][0] for n in shape) + ")"


def shape_story(got: Sequence[int], want: Sequence[int], sizes: Mapping[str, int] | None = None) -> str:
    """A sentence about how ``got`` differs from ``want``: dimensions swapped, one extra or missing, one wrong size."""
    got, want = tuple(got), tuple(want)
    sizes = sizes or {}
    named_got, named_want = letters(got, sizes), letters(want, sizes)
    text = f"shape {got}"
    if named_got and len(got) > 1:
        text += f", that is {named_got},"
    text += f" where {named_want + ' = ' if named_want else ''}{want} is expected"
    if len(set(want)) == len(want) and sorted(got) == sorted(want) and got != want:
        moved = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
        if len(moved) == 2:
            text += f": dimensions {moved[0]} and {moved[1]} are swapped"
        else:
            text += ": the same dimensions in another order"
    elif len(got) == len(want) + 1 and 1 in got:
        i = got.index(1)
        if got[:i] + got[i + 1:] == want:
            text += f": an extra dimension of size 1 at position {i}"
    elif len(got) + 1 == len(want) and 1 in want:
        i = want.index(1)
        if want[:i] + want[i + 1:] == got:
            text += f": the dimension of size 1 at position {i} is missing"
    elif len(got) == len(want):
        diff = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
        if len(diff) == 1:
            i = diff[0]
            text += f": dimension {i} has size {got[i]} instead of {want[i]}"
            names = [n for n, s in sizes.items() if s == got[i]]
            if len(names) == 1:
                text += f" ({got[i]} is {names[0]})"
    return text


def _spans(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2 and 5'."""
    runs, start = [], None
    for i, n in enumerate(indices):
        if start is None:
            start = n
        if i + 1 == len(indices) or indices[i + 1] != n + 1:
            runs.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return runs[0] if len(runs) == 1 else ", ".join(runs[:-1]) + " and " + runs[-1]


def axis_names(ndim: int, axes: Sequence[str]) -> list[str]:
    """A name for each of ``ndim`` dimensions: ``axes`` name the last ones, ``dim i`` the leading rest."""
    named = list(axes)[-ndim:] if axes else []
    return [f"dim {i}" for i in range(ndim - len(named))] + named


def _plural(name: str) -> str:
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        return name[:-1] + "ies"
    return name + ("es" if name.endswith(("s", "x")) else "s")


def at(index: Sequence[int], axes: Sequence[str]) -> str:
    """(1, 3, 0) with axes (batch item, query, key) -> 'batch item 1, query 3, key 0'."""
    return ", ".join(f"{n} {i}" for n, i in zip(axis_names(len(index), axes), index))


def _extent(differ: torch.Tensor, axes: Sequence[str]) -> tuple[str, bool]:
    """Where the differences are, along each named axis; True when they cover every index of every axis."""
    parts, everywhere = [], True
    for d, name in enumerate(axis_names(differ.dim(), axes)):
        size = differ.size(d)
        if size == 1:
            continue
        hit = differ.transpose(0, d).reshape(size, -1).any(dim=1).nonzero().flatten().tolist()
        if len(hit) < size:
            everywhere = False
            parts.append(f"{name if len(hit) == 1 else _plural(name)} {_spans(hit)}")
    return (", ".join(parts) if parts else ""), everywhere


def describe(got: Any, want: torch.Tensor, *, what: str, axes: Sequence[str] = (), sizes: Mapping[str, int] | None = None,
             forbidden: torch.Tensor | None = None, atol: float = 1e-4, rtol: float = 1e-4,
             reference: str = "the expected values") -> Symptom:
    """The symptom that tells ``got`` from ``want``, found by trying the patterns of :data:`SYMPTOM_KINDS` in order.

    Args:
        what: the result's name in the sentence, e.g. ``"Your weights"``.
        axes: a name for each dimension, e.g. ``("batch item", "query", "key")`` (leading ones may be left out).
        sizes: named sizes, e.g. ``{"B": 3, "T": 5, "S": 7}``, to write shapes as letters.
        forbidden: bool, broadcastable to ``want``: the positions a mask hides.
        reference: how the sentence names ``want``.
    """
    plural = _is_plural(what)

    def verb(singular: str, many: str) -> str:
        return many if plural else singular

    if not isinstance(got, torch.Tensor):
        return Symptom("return-type", f"{what} {verb('is', 'are')} {shape_of(got)}, not a tensor.")
    if got.shape != want.shape:
        return Symptom("shape", f"{what} {verb('has', 'have')} {shape_story(got.shape, want.shape, sizes)}.")
    if want.is_floating_point() != got.is_floating_point() or (want.dtype == torch.bool) != (got.dtype == torch.bool):
        return Symptom("dtype", f"{what} {verb('has', 'have')} dtype {got.dtype} where {want.dtype} is expected.")
    g, w = got.double(), want.double()
    for kind, bad in (("nan", torch.isnan(g) & ~torch.isnan(w)), ("inf", torch.isinf(g) & ~torch.isinf(w))):
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            extent, everywhere = _extent(bad, axes)
            where_ = "everywhere" if everywhere else f"at {extent}" if extent else ""
            if g.dim() > 1 and bool((bad.any(-1) <= bad.all(-1)).all()):
                where_ += ", whole rows"
            if forbidden is not None and torch.equal(bad, forbidden.expand_as(bad)):
                where_ = "exactly at the masked positions"
            name = "NaN" if kind == "nan" else "-inf" if bool((g[bad] < 0).all()) else "+inf" if bool(
                (g[bad] > 0).all()) else "infinite values"
            return Symptom(kind, f"{what} {verb('holds', 'hold')} {name} in {int(bad.sum())} of {bad.numel()} entries "
                                 f"({where_}; the first at {at(first, axes)}) where {_expected_there(w[bad])}.")
    differ = ~torch.isclose(g, w, atol=atol, rtol=rtol, equal_nan=True)
    gap = (g - w).abs().nan_to_num(0.0)
    worst = tuple(int(i) for i in (gap == gap.max()).nonzero()[0])
    largest = (f"by up to {float(gap.max()):.3g} (at {at(worst, axes)}: {float(g[worst]):.4f} instead of "
               f"{float(w[worst]):.4f})")
    differs = verb("differs", "differ")
    if forbidden is not None:
        hidden = forbidden.expand_as(want)
        if not (differ & ~hidden).any():
            return Symptom("masked-positions", f"{what} {differs} from {reference} only at masked positions, {largest}: "
                                               "every position the mask allows is right.")
        if not (differ & hidden).any():
            return Symptom("unmasked-positions", f"{what} {differs} from {reference} only at positions the mask allows, "
                                                 f"{largest}; the masked positions are right.")
        leak = differ & hidden & (g.abs() > 1e-6)
        if leak.any():
            top = (g.abs().nan_to_num(0.0) * leak).flatten().argmax()
            spot = tuple(int(i) for i in torch.unravel_index(top, g.shape))
            in_leaky_rows = bool((differ.any(-1) <= leak.any(-1)).all()) if g.dim() > 1 else False
            extent, _ = _extent(leak, axes)
            return Symptom("leak", f"{what} {verb('gives', 'give')} weight to {int(leak.sum())} masked "
                                   f"position{'s' if int(leak.sum()) > 1 else ''} ({extent or 'everywhere'}), the "
                                   f"largest {float(g[spot]):.3g} at {at(spot, axes)}"
                                   f"{'; the rows without such a leak are right' if in_leaky_rows else ''}.")
    if g.dim() >= 2 and g.size(-1) == g.size(-2) and torch.allclose(g, w.transpose(-2, -1), atol=atol, rtol=rtol):
        return Symptom("transposed", f"{what} {verb('holds', 'hold')} {reference} with the last two dimensions "
                                     "swapped (transposed).")
    for d, name in enumerate(axis_names(g.dim(), axes)):
        order = _permutation(g, w, d, atol, rtol)
        if order is not None:
            return Symptom("order", f"{what} {verb('holds', 'hold')} the right {_plural(name)}, in another order: "
                                    f"{name} 0, 1, 2, ... of yours are {name} {', '.join(map(str, order[:8]))}"
                                    f"{', ...' if len(order) > 8 else ''} of the expected result.")
    if float((w * w).sum()) > 0:
        factor = float((g * w).sum() / (w * w).sum())
        if abs(factor - 1) > 1e-3 and torch.allclose(g, factor * w, atol=atol, rtol=rtol):
            return Symptom("scale", f"{what} {verb('is', 'are')} {reference} times {factor:.4g}, every entry by the "
                                    "same factor.")
    shift = float((g - w).mean())
    if abs(shift) > atol and torch.allclose(g, w + shift, atol=atol, rtol=rtol):
        return Symptom("shift", f"{what} {verb('is', 'are')} {reference} plus {shift:.4g}, every entry by the same "
                                "amount.")
    extent, everywhere = _extent(differ, axes)
    share = f"{int(differ.sum())} of {differ.numel()} entries"
    if everywhere or not extent:
        return Symptom("everywhere", f"{what} {differs} from {reference} in {share}, {largest}.")
    return Symptom("partial", f"{what} {differs} from {reference} only at {extent} ({share}), {largest}.")


def _expected_there(values: torch.Tensor) -> str:
    """'0 is expected' when the expected entries are all one number, else 'the expected values are numbers'."""
    if values.numel() and bool((values == values.flatten()[0]).all()):
        return f"{float(values.flatten()[0]):.4g} is expected"
    return "the expected values are numbers"


def _is_plural(what: str) -> bool:
    """'Your weights' are, 'Your output' is: a plural noun ends in s (but not ss)."""
    last = what.split()[-1] if what.split() else ""
    return last.endswith("s") and not last.endswith("ss")


def _permutation(g: torch.Tensor, w: torch.Tensor, dim: int, atol: float, rtol: float) -> list[int] | None:
    """The order of ``w``'s slices along ``dim`` that gives ``g``, if ``g`` is ``w`` shuffled along it (and not equal)."""
    n = g.size(dim)
    if n < 2 or n > 64:
        return None
    gs, ws = g.movedim(dim, 0), w.movedim(dim, 0)
    order = []
    for i in range(n):
        hits = [j for j in range(n) if torch.allclose(gs[i], ws[j], atol=atol, rtol=rtol)]
        if len(hits) != 1:
            return None
        order.append(hits[0])
    return order if order != list(range(n)) and sorted(order) == list(range(n)) else None


def rows_sum(weights: torch.Tensor) -> str:
    """'every row sums to 1' or the range the rows sum to, for attention weights (..., T, S); "" when some entries are
    not finite (the sums would say nothing more)."""
    if not bool(torch.isfinite(weights).all()):
        return ""
    sums = weights.double().sum(-1)
    if torch.allclose(sums, torch.ones((), dtype=sums.dtype), atol=1e-4):
        return "every row sums to 1"
    return f"the rows sum to values from {float(sums.min()):.3g} to {float(sums.max()):.3g}, not to 1"


def how_far(got: torch.Tensor, want: torch.Tensor) -> str:
    """How far ``got`` is from ``want``, for the end of a sentence: "differs by up to 0.031", or, where ``got`` holds
    NaN or an infinity that ``want`` does not, "holds NaN in 12 of 60 entries" (never "by up to nan")."""
    g, w = got.double(), want.double()
    for name, bad in (("NaN", torch.isnan(g) & ~torch.isnan(w)), ("an infinity", torch.isinf(g) & ~torch.isinf(w))):
        if bool(bad.any()):
            return f"holds {name} in {int(bad.sum())} of {bad.numel()} entries"
    return f"differs by up to {float((g - w).abs().nan_to_num(0.0).max()):.3g}"

