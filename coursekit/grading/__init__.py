"""Checks for the graded notebooks: run the learner's code and the reference on the same fresh inputs,
and when they differ, say *how* ("you scaled by d_k instead of sqrt(d_k)"), not just that they do.

Every ``check_*`` function takes the learner's function or class, returns None and prints a short
confirmation when it is right, and raises :class:`CheckFailed` (an ``AssertionError``, so nbgrader counts
the test as failed) with a diagnosis when it is not. ``seed=None`` draws a fresh seed, which the message
reports so a failure can be reproduced.

A diagnosis names a mistake only when the learner's results match one known mistake of the task's catalogue,
and no other, on every input the check tried; otherwise it describes the symptom exactly
(:mod:`coursekit.grading.diagnosis`, whose docstring has the recipe for a new notebook's catalogue). Every
failure carries a stable code, ``err.code``, also at the start of its message in square brackets::

    CheckFailed: [sdpa.unscaled] Your weights equal softmax(query @ key^T) with no scaling: ...

:func:`failure_code` reads it back from a recorded message (``coursekit grade``'s feedback, nbgrader's output).

A check also refuses answers that hand the work to the reference it is checking against
(:func:`forbid_shortcuts`, one policy per task): calling ``coursekit``'s implementation, or torch's,
earns no points for that part.

Every check works on learner code run locally and on the sandbox proxies of ``coursekit grade``
(see :mod:`coursekit.grading.core`). One module per notebook:

- :mod:`~coursekit.grading.attention`: *scaled dot-product attention* (``sdpa``)
- :mod:`~coursekit.grading.bahdanau`: *Bahdanau attention* (``bahdanau``, stage 1)
- :mod:`~coursekit.grading.rnn_self_attention`: *RNN + self-attention* (``rnn_self_attention``, stage 2)
- :mod:`~coursekit.grading.attention_without_rnn`: *attention without RNN* (``attention_without_rnn``, stage 3)
- :mod:`~coursekit.grading.multihead`: *multi-head attention* (``multihead``)
- :mod:`~coursekit.grading.positional`: *positional encodings* (``positional``)
- :mod:`~coursekit.grading.transformer`: *the Transformer* (``transformer``)
- :mod:`~coursekit.grading.bert`: *BERT pretraining* (``bert``)
- :mod:`~coursekit.grading.classifier`: *a Transformer classifier from scratch* (``classifier``)
- :mod:`~coursekit.grading.gpt`: *GPT* (``gpt``)
"""

from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, ShortcutUsed, failure_code,
                                    forbid_shortcuts, fresh_seed, register_task)
from coursekit.grading.diagnosis import Catalogue, Mutant, Symptom, catalogue, catalogues
from coursekit.grading.attention import (SDPA_TASK, check_attention_matches_reference, check_attention_shapes,
                                         check_attention_values, check_causal_mask, check_padding_mask,
                                         random_qkv)
from coursekit.grading.bahdanau import (ADDITIVE_TASK, SOFTMAX_TASK, check_additive_attention,
                                        check_additive_scores, check_masked_softmax, check_single_step,
                                        check_trained_date_model)
from coursekit.grading.bert import (LOSS_TASK, MASKING_TASK, NSP_TASK, PAIR_TASK, STEP_TASK, check_masking_choice,
                                    check_masking_proportions, check_nsp_pairs, check_pack_pair,
                                    check_pretraining_loss, check_pretraining_step)
from coursekit.grading.classifier import (CLASSIFIER_TASK, EMBEDDING_TASK, POOLING_TASK, check_classifier,
                                          check_embedding, check_pooling, check_trained_classifier)
from coursekit.grading.gpt import (ATTENTION_TASK, CACHE_TASK, LOOP_TASK, SAMPLING_TASK, check_cached_attention,
                                   check_causal_attention, check_generate, check_generate_sampling, check_next_token)
from coursekit.grading.multihead import (HEADS_TASK, MHA_TASK, SELF_ATTENTION_TASK, check_merge_heads,
                                         check_multihead_cross_attention, check_multihead_masks,
                                         check_multihead_self_attention, check_self_attention, check_split_heads)
from coursekit.grading.positional import (LAYER_TASK, OFFSET_TASK, TABLE_TASK, check_attention_with_positions,
                                          check_offset_matrix, check_permutation_equivariance, check_sinusoidal_table)
from coursekit.grading.transformer import (DECODER_TASK, ENCODER_TASK, MASK_TASK, MODEL_TASK,
                                           check_causal_mask_function, check_decoder_block, check_encoder_block,
                                           check_trained_translator, check_transformer_model)
from coursekit.grading.rnn_self_attention import (BLOCK_TASK, GENERAL_TASK, MEAN_TASK, STAGE2_TASK,
                                                  check_general_attention, check_masked_mean,
                                                  check_self_attention_block, check_self_attentive_rnn)
from coursekit.grading.attention_without_rnn import (EMBED_TASK, LEARNED_TASK, SINES_TASK, STAGE3_TASK,
                                                     check_attention_without_rnn, check_learned_positions,
                                                     check_scaled_embedding, check_sinusoidal_positions)

__all__ = [
    "CheckFailed", "ShortcutUsed", "Reference", "ShortcutPolicy", "failure_code", "forbid_shortcuts", "fresh_seed",
    "register_task", "Catalogue", "Mutant", "Symptom", "catalogue", "catalogues",
    "SDPA_TASK", "random_qkv", "check_attention_shapes", "check_attention_values", "check_padding_mask",
    "check_causal_mask", "check_attention_matches_reference",
    "SOFTMAX_TASK", "ADDITIVE_TASK", "check_masked_softmax", "check_additive_scores", "check_additive_attention",
    "check_single_step", "check_trained_date_model",
    "SELF_ATTENTION_TASK", "HEADS_TASK", "MHA_TASK", "check_self_attention", "check_split_heads", "check_merge_heads",
    "check_multihead_self_attention", "check_multihead_cross_attention", "check_multihead_masks",
    "TABLE_TASK", "OFFSET_TASK", "LAYER_TASK", "check_sinusoidal_table", "check_offset_matrix",
    "check_permutation_equivariance", "check_attention_with_positions",
    "MASK_TASK", "ENCODER_TASK", "DECODER_TASK", "MODEL_TASK", "check_causal_mask_function", "check_encoder_block",
    "check_decoder_block", "check_transformer_model", "check_trained_translator",
    "MASKING_TASK", "PAIR_TASK", "NSP_TASK", "LOSS_TASK", "check_masking_choice", "check_masking_proportions",
    "check_pack_pair", "check_nsp_pairs", "check_pretraining_loss", "STEP_TASK", "check_pretraining_step",
    "EMBEDDING_TASK", "POOLING_TASK", "CLASSIFIER_TASK", "check_embedding", "check_pooling", "check_classifier",
    "check_trained_classifier",
    "ATTENTION_TASK", "CACHE_TASK", "SAMPLING_TASK", "LOOP_TASK", "check_causal_attention", "check_cached_attention",
    "check_next_token", "check_generate", "check_generate_sampling",
    "BLOCK_TASK", "MEAN_TASK", "GENERAL_TASK", "STAGE2_TASK", "check_self_attention_block", "check_masked_mean",
    "check_general_attention", "check_self_attentive_rnn",
    "LEARNED_TASK", "SINES_TASK", "EMBED_TASK", "STAGE3_TASK", "check_learned_positions",
    "check_sinusoidal_positions", "check_scaled_embedding", "check_attention_without_rnn",
]
