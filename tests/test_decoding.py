"""coursekit.decoding: greedy and beam search against hand-worked examples, brute force and each other."""

import itertools
import math

import pytest
import torch

from coursekit.decoding import beam_search, gnmt_length_penalty, greedy_decode
from coursekit.encoder_decoder import EncoderDecoder, StepOutput
from tests.helpers import STAGE_IDS, STAGES, random_batch

PAD, START, STOP, A, B = 0, 1, 2, 3, 4

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class ScriptedModel(EncoderDecoder):
    """A 'model' whose next-token distribution is a fixed table indexed by (script, previous token).

    The script is the first source id, so one batch can hold several hand-worked examples.
    Its best outputs can be worked out on paper, independently of any search code.
    """

    def __init__(self, table: torch.Tensor) -> None:  # (scripts, V, V) probabilities
        super().__init__()
        self.log_table = table.log()

    def encode(self, src, src_key_padding_mask):
        return {"script": src[:, 0]}

    def decode_step(self, token, state):
        return StepOutput(self.log_table[state["script"], token], state, None)


def row(V=5, **probs):
    """A distribution over V tokens: the named tokens get the given probabilities, the rest share what is left."""
    named = {globals()[name]: p for name, p in probs.items()}
    rest = (1.0 - sum(named.values())) / (V - len(named))
    return torch.tensor([named.get(i, rest) for i in range(V)])


def scripted(rows_per_script):
    """rows_per_script: one dict {previous token: row} per script; unlisted previous tokens get a uniform row."""
    table = torch.full((len(rows_per_script), 5, 5), 0.2)
    for s, rows in enumerate(rows_per_script):
        for previous, distribution in rows.items():
            table[s, previous] = distribution
    return ScriptedModel(table)


def run(search, model, scripts, **kwargs):
    src = torch.tensor(scripts)[:, None]
    return search(model, src, torch.zeros_like(src, dtype=torch.bool), start_id=START, stop_id=STOP, **kwargs)


# ----- hand-worked examples -------------------------------------------------------------------------


def test_beam_finds_what_greedy_misses():
    # From [START]: A 0.6, B 0.4. After A: STOP 0.4 (the rest spread thin). After B: STOP 0.9.
    # Greedy: A, STOP with p = 0.6 * 0.4 = 0.24. Best: B, STOP with p = 0.4 * 0.9 = 0.36.
    model = scripted([{START: row(A=0.6, B=0.4), A: row(STOP=0.4), B: row(STOP=0.9)}])
    greedy = run(greedy_decode, model, [0], max_len=5)
    beam = run(beam_search, model, [0], max_len=5, beam_size=2, length_penalty=0.0)
    assert greedy.tokens.tolist() == [[A, STOP]] and greedy.lengths.tolist() == [2]
    assert beam.tokens.tolist() == [[B, STOP]] and beam.lengths.tolist() == [2]
    torch.testing.assert_close(greedy.scores, torch.tensor([math.log(0.24)]))
    torch.testing.assert_close(beam.scores, torch.tensor([math.log(0.36)]))


def test_length_penalty_prefers_the_longer_hypothesis():
    # [STOP] alone: p = 0.3. [A, B, STOP]: p = 0.7 * 0.98 * 0.4 = 0.2744, lower but three tokens long.
    model = scripted([{START: row(STOP=0.3, A=0.7), A: row(B=0.98), B: row(STOP=0.4)}])
    raw = run(beam_search, model, [0], max_len=6, beam_size=2, length_penalty=0.0)
    normalised = run(beam_search, model, [0], max_len=6, beam_size=2, length_penalty=1.0)
    assert raw.tokens.tolist() == [[STOP, PAD, PAD]]
    assert normalised.tokens.tolist() == [[A, B, STOP]]
    # by hand: log(0.3) / 1 = -1.204 < log(0.2744) / (8 / 6) = -0.970
    short = math.log(0.3) / gnmt_length_penalty(torch.tensor(1), 1.0)
    long = math.log(0.2744) / gnmt_length_penalty(torch.tensor(3), 1.0)
    assert short < long
    torch.testing.assert_close(normalised.scores, torch.tensor([math.log(0.2744)]))


def test_finished_sequences_stop_and_are_padded():
    # Script 0 stops at once; script 1 says A, A, ... and never stops (A after A with p = 0.9).
    model = scripted([{START: row(STOP=0.9)}, {START: row(A=0.9), A: row(A=0.9)}])
    for search, kwargs in ((greedy_decode, {}), (beam_search, {"beam_size": 3})):
        out = run(search, model, [0, 1], max_len=4, **kwargs)
        assert out.tokens.tolist() == [[STOP, PAD, PAD, PAD], [A, A, A, A]]
        assert out.lengths.tolist() == [1, 4]  # cut off at max_len: 4 tokens, no [STOP]
        torch.testing.assert_close(out.scores, torch.tensor([math.log(0.9), 4 * math.log(0.9)]))


def test_decoding_ends_once_every_sequence_has_stopped():
    model = scripted([{START: row(A=0.9), A: row(STOP=0.9)}])
    assert run(greedy_decode, model, [0, 0], max_len=50).tokens.shape == (2, 2)
    assert run(beam_search, model, [0, 0], max_len=50, beam_size=3).tokens.shape == (2, 2)


@pytest.mark.parametrize("max_len", [1, 3])
def test_max_len_bounds_the_output(max_len):
    model = scripted([{START: row(A=0.9), A: row(A=0.9)}])
    for search in (greedy_decode, beam_search):
        out = run(search, model, [0], max_len=max_len)
        assert out.tokens.shape == (1, max_len) and out.lengths.tolist() == [max_len]


# ----- real models ------------------------------------------------------------------------------------


def build(cls, config_cls, tgt_vocab_size, seed):
    torch.manual_seed(seed)
    return cls(config_cls.tiny(13, tgt_vocab_size)).eval()


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_beam_size_one_is_greedy(cls, config_cls, seed):
    model = build(cls, config_cls, tgt_vocab_size=11, seed=seed)
    src, src_mask, _, _ = random_batch([6, 3, 5, 1], [1, 1, 1, 1], seed=seed)
    greedy = greedy_decode(model, src, src_mask, start_id=START, stop_id=STOP, max_len=8)
    beam = beam_search(model, src, src_mask, start_id=START, stop_id=STOP, max_len=8, beam_size=1)
    assert torch.equal(beam.tokens, greedy.tokens)
    assert torch.equal(beam.lengths, greedy.lengths)
    torch.testing.assert_close(beam.scores, greedy.scores)
    if greedy.weights is not None:
        torch.testing.assert_close(beam.weights, greedy.weights)
        assert (greedy.weights[3, :, 1:] == 0).all()  # source 3 has one real token: padding gets nothing


def teacher_forced_log_prob(model, src, src_mask, sequences):
    """log p(y | x) of each (source, output) pair, from the model's forward pass: no search code involved."""
    longest = max(len(y) for y in sequences)
    tgt_in = torch.zeros(len(sequences), longest, dtype=torch.long)
    target = torch.zeros(len(sequences), longest, dtype=torch.long)
    for i, y in enumerate(sequences):
        tgt_in[i, : len(y)] = torch.tensor([START, *y[:-1]])
        target[i, : len(y)] = torch.tensor(y)
    log_probs = model(src, src_mask, tgt_in).logits.log_softmax(-1).gather(2, target[..., None])[..., 0]
    real = torch.arange(longest)[None, :] < torch.tensor([len(y) for y in sequences])[:, None]
    return (log_probs * real).sum(1)


def all_outputs(vocab_size, max_len):
    """Every output of at most max_len tokens: cut after the first [STOP], or max_len tokens without one."""
    outputs = set()
    for y in itertools.product(range(vocab_size), repeat=max_len):
        outputs.add(y[: y.index(STOP) + 1] if STOP in y else y)
    return sorted(outputs)


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
def test_wide_beam_finds_the_brute_force_optimum(cls, config_cls):
    """With K >= V^(L-1) beams nothing is ever pruned, so beam search must return the most likely output
    of all V^L, found here by scoring every one with teacher forcing. It must also score at least greedy."""
    V, L = 5, 3
    model = build(cls, config_cls, tgt_vocab_size=V, seed=3)
    candidates = all_outputs(V, L)
    src, src_mask, _, _ = random_batch([4, 2], [1, 1], seed=3)
    beam = beam_search(model, src, src_mask, start_id=START, stop_id=STOP, max_len=L, beam_size=V ** (L - 1),
                       length_penalty=0.0)
    greedy = greedy_decode(model, src, src_mask, start_id=START, stop_id=STOP, max_len=L)
    for b in range(2):
        n = len(candidates)
        scores = teacher_forced_log_prob(model, src[b:b + 1].expand(n, -1), src_mask[b:b + 1].expand(n, -1),
                                         candidates)
        best = candidates[int(scores.argmax())]
        assert beam.tokens[b, : beam.lengths[b]].tolist() == list(best)
        torch.testing.assert_close(beam.scores[b], scores.max(), atol=1e-5, rtol=1e-5)
        greedy_output = greedy.tokens[b, : greedy.lengths[b]].tolist()
        torch.testing.assert_close(greedy.scores[b], scores[candidates.index(tuple(greedy_output))],
                                   atol=1e-5, rtol=1e-5)
        assert beam.scores[b] >= greedy.scores[b] - 1e-6


# ----- bad arguments ----------------------------------------------------------------------------------


def test_bad_arguments_are_named():
    model = scripted([{}])
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        run(greedy_decode, model, [0], max_len=0)
    with pytest.raises(ValueError, match="beam_size must be a positive int"):
        run(beam_search, model, [0], max_len=3, beam_size=0)
    with pytest.raises(ValueError, match="start_id and stop_id are both"):
        greedy_decode(model, torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.bool),
                      start_id=1, stop_id=1, max_len=3)
    with pytest.raises(ValueError, match="stop_id=9 is not an id of the model's target vocabulary"):
        greedy_decode(model, torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.bool),
                      start_id=1, stop_id=9, max_len=3)
    with pytest.raises(TypeError, match=r"src\[None\]"):
        greedy_decode(model, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.bool),
                      start_id=1, stop_id=2, max_len=3)
