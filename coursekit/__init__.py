"""coursekit: the reference implementations behind *Attention Mechanisms and Transformers*.

One module per concept, named as the book names it:

- :mod:`coursekit.masks`: causal and padding masks (True = not allowed, as in ``torch.nn``).
- :mod:`coursekit.attention`: scaled dot-product attention, the scoring family (additive, dot,
  general) and multi-head attention.
- :mod:`coursekit.positional`: sinusoidal and learned positional encodings.
- :mod:`coursekit.data`: dates and number words generated offline; vocabularies, splits, batches.
- :mod:`coursekit.encoder_decoder`: the interface every sequence-to-sequence model implements.
- :mod:`coursekit.seq2seq`: the baseline RNN encoder-decoder, stages 1-3 of the arc (Bahdanau attention,
  self-attention, attention without recurrence).
- :mod:`coursekit.transformer_layers`, :mod:`coursekit.transformer`: the Transformer (stage 4), with a
  key/value cache; :mod:`coursekit.translate`: training it to translate, also under ``torchrun``.
- :mod:`coursekit.arc`: the baseline and stages 1-4 trained on one task with one budget, timed and compared.
- :mod:`coursekit.from_keras`: the lecture notes' Keras layers (Keras 3 on PyTorch), weights copied into the course's.
- :mod:`coursekit.decoding`: greedy and beam search.
- :mod:`coursekit.train`: the one training step and loop of every model, its history, checkpoints.
- :mod:`coursekit.corpora`: real English text shipped in a package (WordNet definitions, Shakespeare).
- :mod:`coursekit.classifier`: a Transformer text classifier from scratch, and its baselines.
- :mod:`coursekit.bert`: BERT, a package: model, checkpoints, tokenizer, corpus, pretraining data, training,
  a downstream task, plots.
- :mod:`coursekit.gpt`, :mod:`coursekit.gpt_train`: a decoder-only language model, generation with a
  key/value cache, training on Shakespeare.
- :mod:`coursekit.viz`: the course's plots (attention, positions, training).
- :mod:`coursekit.grading`: the checks learners call in graded notebooks.
- :mod:`coursekit.autograder`: the ``coursekit`` command: a learner's self-check, and the instructor's
  autograder, which grades each submission in an OS sandbox over real nbgrader.
- :mod:`coursekit.device`: picking CUDA, MPS or CPU.
"""

__version__ = "0.1.0"
