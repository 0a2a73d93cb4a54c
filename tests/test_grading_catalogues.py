"""Every mutant of every catalogue fails its check and can be told from every other mutant, at the check's own sizes,
under many seeds: otherwise a check could name the wrong mistake, or pass one, depending on the seed."""

import pytest

from coursekit import grading
from coursekit.grading.diagnosis import SYMPTOM_KINDS, same

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)

SEEDS = 25
CATALOGUES = sorted(grading.catalogues())


def test_every_notebook_has_catalogues():
    prefixes = {c.prefix for c in grading.catalogues().values()}
    assert {"sdpa", "softmax", "additive", "selfattn", "heads", "mha", "table", "offset", "layer"} <= prefixes


@pytest.mark.parametrize("name", CATALOGUES)
def test_every_mutant_fails_the_check_and_differs_from_every_other(name):
    cat = grading.catalogues()[name]
    for seed in range(SEEDS):
        probes = cat.probes(seed)
        outputs = {}
        for mutant in cat.mutants:
            results = [cat.output_of(mutant, probe) for probe in probes]
            assert all(r is not None for r in results), f"{mutant.code} raises at the sizes of {name}"
            assert any(not cat.passes(r, p) for r, p in zip(results, probes)), \
                f"{name}: {mutant.code} passes the check under seed {seed}"
            outputs[mutant.code] = results
        tolerance = {m.code: cat.atol if m.atol is None else m.atol for m in cat.mutants}
        codes = list(outputs)
        for i, a in enumerate(codes):
            for b in codes[i + 1:]:
                atol = max(tolerance[a], tolerance[b])
                assert not all(same(x, y, atol, cat.rtol) for x, y in zip(outputs[a], outputs[b])), \
                    f"{name}: {a} and {b} give the same results under seed {seed}"


@pytest.mark.parametrize("name", CATALOGUES)
def test_a_learner_who_makes_the_mistake_gets_its_name(name):
    """Judging a mutant's own results names that mutant (and raises with its code)."""
    cat = grading.catalogues()[name]
    probes = cat.probes(0)
    for mutant in cat.mutants:
        results = [cat.output_of(mutant, probe) for probe in probes]
        with pytest.raises(grading.CheckFailed) as caught:
            cat.judge(results, probes, seed=0, describe=lambda *a: grading.Symptom("everywhere", "unused"))
        assert caught.value.code == mutant.code


def test_the_reference_passes_every_catalogue():
    for name, cat in grading.catalogues().items():
        for seed in range(3):
            probes = cat.probes(seed)
            cat.judge([cat.expected(p) for p in probes], probes, seed=seed, describe=None)


def test_symptom_kinds_are_documented_codes():
    assert all(grading.core.CODE_PATTERN.match(f"task.symptom.{kind}") for kind in SYMPTOM_KINDS)
