"""coursekit: the reference implementations behind *Attention Mechanisms and Transformers*.

One module per concept, named as the book names it:

- :mod:`coursekit.masks`: causal and padding masks (True = not allowed, as in ``torch.nn``).
- :mod:`coursekit.attention`: scaled dot-product attention, the scoring family (additive, dot,
  general) and multi-head attention.
- :mod:`coursekit.positional`: sinusoidal and learned positional encodings.
- :mod:`coursekit.data`: dates and number words generated offline; vocabularies, splits, batches.
- :mod:`coursekit.seq2seq`: the RNN stages of the arc and attention without recurrence, behind one
  encoder-decoder interface.
- :mod:`coursekit.transformer_layers`, :mod:`coursekit.transformer`: the Transformer, with a
  key/value cache; :mod:`coursekit.translate`: training it, also under ``torchrun``.
- :mod:`coursekit.decoding`: greedy and beam search; :mod:`coursekit.train`: the training loop.
- :mod:`coursekit.bert`, :mod:`coursekit.bert_data`, :mod:`coursekit.bert_train`: BERT pretraining.
- :mod:`coursekit.viz`, :mod:`coursekit.viz_transformer`: the course's plots.
- :mod:`coursekit.grading`: the checks learners call in graded notebooks.
- :mod:`coursekit.autograder`: the ``coursekit`` command: a learner's self-check, and the instructor's
  autograder, which grades each submission in an OS sandbox over real nbgrader.
- :mod:`coursekit.device`: picking CUDA, MPS or CPU.
"""

__version__ = "0.1.0"
