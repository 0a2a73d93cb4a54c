"""Hidden tests draw a fresh seed for every learner, so a check must pass a right answer under EVERY seed, not just
the ones the other tests happen to use. This sweeps each check over many seeds with the right answers the per-module
tests define.

It exists because one did not: the sinusoidal-table check drew a random (max_len, d_model), and when the two came out
equal (about 1 seed in 70) it told a correct learner their square table was transposed.
"""

import pytest

from coursekit import grading
from tests import helpers as h

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)

SEEDS = 200  # covers the table check's 69th seed, the first square one before the fix

RIGHT_ANSWERS = [
    (grading.check_attention_values, h.make_attention, SEEDS),
    (grading.check_attention_shapes, h.make_attention, SEEDS),
    (grading.check_padding_mask, h.make_attention, SEEDS),
    (grading.check_causal_mask, h.make_attention, SEEDS),
    (grading.check_attention_matches_reference, h.make_attention, SEEDS),
    (grading.check_masked_softmax, h.make_masked_softmax, SEEDS),
    (grading.check_additive_scores, h.make_additive, SEEDS),
    (grading.check_additive_attention, h.make_additive, SEEDS),
    (grading.check_single_step, h.make_additive, SEEDS),
    (grading.check_self_attention, h.make_self_attention, SEEDS),
    (grading.check_split_heads, h.make_split, SEEDS),
    (grading.check_merge_heads, h.make_merge, SEEDS),
    *[(check, h.make_mha, SEEDS) for check in (grading.check_multihead_self_attention,
                                                grading.check_multihead_cross_attention,
                                                grading.check_multihead_masks)],
    (grading.check_sinusoidal_table, h.make_table, SEEDS),
    (grading.check_offset_matrix, h.make_offset, SEEDS),
    (grading.check_permutation_equivariance, h.make_layer, SEEDS),
    (grading.check_attention_with_positions, h.make_layer, SEEDS),
    (grading.check_causal_mask_function, h.make_mask, SEEDS),
    (grading.check_encoder_block, h.make_encoder, 60),  # the three model checks cost 5-30 ms a seed
    (grading.check_decoder_block, h.make_decoder, 60),
    (grading.check_transformer_model, h.make_model, 20),
    (grading.check_masking_choice, h.make_masking, 60),
    (grading.check_masking_proportions, h.make_masking, 60),
    (grading.check_pack_pair, h.make_pack, SEEDS),
    (grading.check_nsp_pairs, h.make_nsp, 60),
    (grading.check_pretraining_loss, h.make_loss, SEEDS),
    (grading.check_self_attention_block, h.make_block, 60),
    (grading.check_masked_mean, h.make_masked_mean, SEEDS),
    (grading.check_general_attention, h.make_general, SEEDS),
    (grading.check_self_attentive_rnn, h.make_stage2, 20),
    (grading.check_learned_positions, h.make_learned, SEEDS),
    (grading.check_sinusoidal_positions, h.make_sinusoidal, SEEDS),
    (grading.check_scaled_embedding, h.make_embed, SEEDS),
    (grading.check_attention_without_rnn, h.make_stage3, 20),
    (grading.check_pretraining_step, h.make_step, 20, (h.tiny_bert, h.sgd)),
    (grading.check_causal_attention, h.make_causal_attention, 60),
    (grading.check_cached_attention, h.make_causal_attention, 60),
    (grading.check_next_token, h.make_next_token, 60),
    (grading.check_generate, h.make_generate, 20, (h.tiny_gpt,)),
    (grading.check_generate_sampling, h.make_generate, 20, (h.tiny_gpt,)),
    (grading.check_embedding, h.make_embedding, 60),
    (grading.check_pooling, h.make_pool, SEEDS),
    (grading.check_classifier, h.make_classifier, 20),
]


@pytest.mark.parametrize("check, make, seeds, more", [(*entry, ())[:4] for entry in RIGHT_ANSWERS],
                         ids=[entry[0].__name__ for entry in RIGHT_ANSWERS])
def test_a_right_answer_passes_under_every_seed(check, make, seeds, more, capsys):
    """``more``: what the check takes after the answer (the notebook's model factory, its optimizer)."""
    answer = make()
    failed = {}
    for seed in range(seeds):
        try:
            check(answer, *more, seed=seed)
        except grading.CheckFailed as error:
            failed[seed] = str(error)
    assert not failed, f"{len(failed)} of {seeds} seeds fail a right answer; first: {next(iter(failed.items()))}"
    assert capsys.readouterr().out.count("✓") == seeds


def test_every_check_is_swept():
    """A new check joins RIGHT_ANSWERS; the trained-model checks draw only which held-out examples to score."""
    swept = {entry[0].__name__ for entry in RIGHT_ANSWERS}
    trained = {"check_trained_date_model", "check_trained_translator", "check_trained_classifier"}
    assert {name for name in dir(grading) if name.startswith("check_")} - trained == swept
