"""BERT (Devlin et al., 2019): the model, its data, pretraining and fine-tuning, one module per job.

- :mod:`coursekit.bert.model`: :class:`BertModel`, :class:`BertForPreTraining` (masked LM + next sentence
  prediction, one loss) and :class:`BertForSequenceClassification` (fine-tuning on [CLS]).
- :mod:`coursekit.bert.checkpoints`: reading and writing Hugging Face checkpoints.
- :mod:`coursekit.bert.tokenizer`: the WordPiece tokenizer; packing and padding its ids.
- :mod:`coursekit.bert.corpus`: real English text offline, as documents: WordNet's dictionary, the standard
  library's docstrings.
- :mod:`coursekit.bert.pretraining_data`: next-sentence pairs and dynamic masking (15%, 80/10/10).
- :mod:`coursekit.bert.training`: pretraining and fine-tuning; filling in blanks; the book's pretraining run and
  its checkpoint (``python -m coursekit.bert.training``).
- :mod:`coursekit.bert.downstream`: a sentence-classification task and its dataset.
- :mod:`coursekit.bert.plots`: plots that run the model (attention over a sentence pair, [MASK] guesses).

The model classes are importable from here, ``from coursekit.bert import BertModel``; everything else from its
module.

Book: chapter "BERT".
"""

from coursekit.bert.model import (
    BertConfig,
    BertEmbeddings,
    BertForPreTraining,
    BertForSequenceClassification,
    BertModel,
    MaskedLMHead,
    PretrainingLoss,
    count_parameters,
    init_bert_weights,
)

__all__ = [
    "BertConfig",
    "BertEmbeddings",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertModel",
    "MaskedLMHead",
    "PretrainingLoss",
    "count_parameters",
    "init_bert_weights",
]
