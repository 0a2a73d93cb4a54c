"""coursekit.classifier: the pieces behave as their definitions say, padding changes nothing, the encoder is
torch's, and on the real WordNet split the Transformer beats the bag-of-words baseline."""

import pytest
import torch
from torch import nn

from coursekit.classifier import (
    BagOfWords,
    ClassifierConfig,
    TextBatches,
    TransformerClassifier,
    bag_of_words_baseline,
    classification_report,
    majority_baseline,
    predict,
    train_classifier,
    words,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class ToyTokenizer:
    """Whitespace words with fixed ids; [PAD] = 0, [CLS] = 1."""

    pad_id, cls_id = 0, 1

    def __init__(self, vocab):
        self.ids = {w: i + 2 for i, w in enumerate(vocab)}

    def encode_batch(self, texts):
        return [[self.ids[w] for w in t.split()] for t in texts]


def test_padding_changes_nothing_for_either_pooling():
    for pooling in ("cls", "mean"):
        torch.manual_seed(0)
        model = TransformerClassifier(ClassifierConfig.tiny(vocab_size=20, num_classes=3, pooling=pooling)).eval()
        ids = torch.tensor([[1, 5, 6, 7]])
        padded = torch.tensor([[1, 5, 6, 7, 0, 0]])
        with torch.no_grad():
            alone = model(ids)
            in_batch = model(padded, padded == 0)
        torch.testing.assert_close(alone, in_batch, atol=1e-5, rtol=1e-5)


def test_encoder_equals_torch_transformer_encoder_with_weights_copied():
    torch.manual_seed(1)
    model = TransformerClassifier(ClassifierConfig.tiny(vocab_size=20, num_classes=3, num_layers=2)).eval()
    layer = nn.TransformerEncoderLayer(32, 2, 64, 0.0, activation="gelu", batch_first=True, norm_first=True)
    theirs = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(32), enable_nested_tensor=False).eval()
    for ours_layer, their_layer in zip(model.encoder.layers, theirs.layers):
        sd = {k: v for k, v in ours_layer.state_dict().items() if "self_attn" not in k}
        attn = ours_layer.self_attn
        sd["self_attn.in_proj_weight"] = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        sd["self_attn.in_proj_bias"] = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        sd["self_attn.out_proj.weight"], sd["self_attn.out_proj.bias"] = attn.out_proj.weight, attn.out_proj.bias
        their_layer.load_state_dict(sd)
    theirs.norm.load_state_dict(model.encoder.norm.state_dict())
    ids = torch.tensor([[1, 4, 9, 3, 0], [1, 2, 0, 0, 0]])
    pad = ids == 0
    with torch.no_grad():
        x = model.pos(model.tok_emb(ids))
        torch.testing.assert_close(model.encoder(x, src_key_padding_mask=pad)[~pad],
                                   theirs(x, src_key_padding_mask=pad)[~pad], atol=1e-5, rtol=1e-5)


def test_without_positions_word_order_would_not_matter_but_with_them_it_does():
    torch.manual_seed(2)
    model = TransformerClassifier(ClassifierConfig.tiny(vocab_size=20, num_classes=3, pooling="mean")).eval()
    a, b = torch.tensor([[1, 5, 6, 7]]), torch.tensor([[1, 7, 6, 5]])
    with torch.no_grad():
        assert not torch.allclose(model(a), model(b))
        model.pos.embedding.weight.zero_()
        torch.testing.assert_close(model(a), model(b))


def test_text_batches_put_cls_first_and_cut_to_max_len():
    tok = ToyTokenizer("a b c d e f".split())
    data = TextBatches([("a b c d e f", 0), ("b", 1)], tok, max_len=4)
    batch = data.batch([0, 1])
    assert batch.input_ids.tolist() == [[1, 2, 3, 4], [1, 3, 0, 0]]
    assert batch.key_padding_mask.tolist() == [[False] * 4, [False, False, True, True]]
    assert batch.labels.tolist() == [0, 1]


def test_classification_report_counts_correctly():
    report = classification_report(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0]), ["x", "y", "z"])
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["confusion"] == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert report["per_class"]["x"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})


def test_baselines_on_a_toy_task():
    train = [("red apple", 0), ("green apple", 0), ("red car", 1), ("fast car", 1), ("old car", 1)]
    test = [("green apple pie", 0), ("new car", 1)]
    assert majority_baseline(train, test) == 0.5
    bow = bag_of_words_baseline(train, train, test, 2, weight_decays=(0.0,))
    assert bow["accuracy"] == 1.0
    assert words("A Eurasian shrub's leaves, well-known") == ["a", "eurasian", "shrub's", "leaves", "well-known"]
    assert isinstance(bow["model"], BagOfWords)


def test_config_rejects_bad_pooling():
    with pytest.raises(ValueError, match="pooling"):
        ClassifierConfig(vocab_size=10, num_classes=2, pooling="max")


def test_confusion_matrix_plot_reads_on_its_own():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from coursekit.viz import plot_confusion_matrix, plot_training_curves
    from coursekit.train import History

    ax = plot_confusion_matrix([[8, 2], [1, 9]], ["plant", "food"])
    assert ax.get_title() and ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert len(ax.figure.axes) == 2  # the colorbar
    assert "0.80" in [t.get_text().split("\n")[0] for t in ax.texts]
    with pytest.raises(ValueError, match="classes"):
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"])
    history = History(steps=[1, 2, 3], loss=[1.0, 0.8, 0.6], lr=[1e-3] * 3,
                      epochs=[{"epoch": 1, "step": 3, "train_loss": 0.8, "valid_accuracy": 0.7}])
    figure = plot_training_curves(history)
    assert figure.axes[1].get_lines()[0].get_ydata().tolist() == [0.7]
    plt.close("all")


# The course's split (seed 0), as `python -m coursekit.classifier` reports it.
MARGIN = 0.003  # measured: 95.08% against 94.53% (+0.55 points, 24 of 4,353 test definitions)


def test_the_books_classifier_beats_bag_of_words_on_the_held_out_split(root):
    """The committed checkpoint (made by `python -m coursekit.classifier`) against the bag of words retrained
    here with the weight decay the command chose on the validation split."""
    from coursekit.classifier import load_classifier, train_bag_of_words
    from coursekit.corpora import wordnet_task

    model, tokenizer, history, results = load_classifier(root / "book" / "_data" / "wordnet_classifier.pt")
    assert (root / "book" / "_data" / "wordnet_classifier.pt").stat().st_size < 5e6
    task = wordnet_task()
    test = TextBatches(task.test, tokenizer, model.config.max_len)
    accuracy = (predict(model, test, device="cpu") == test.labels).float().mean().item()
    assert accuracy == pytest.approx(results["test"]["accuracy"], abs=0.002)  # fp16 storage changes little
    bow = train_bag_of_words(task.train, len(task.classes), results["bag_of_words"]["weight_decay"])
    bow_accuracy = (bow.predict([t for t, _ in task.test]) == test.labels).float().mean().item()
    assert accuracy > bow_accuracy + MARGIN, (accuracy, bow_accuracy)
    assert bow_accuracy > majority_baseline(task.train, task.test) + 0.5


def test_train_classifier_learns_a_word_order_task_through_the_shared_loop():
    """'a b' is class 0 and 'b a' class 1: only positions tell them apart, a bag of words cannot."""
    tok = ToyTokenizer(["a", "b"])
    examples = [("a b", 0), ("b a", 1)] * 64
    data = TextBatches(examples, tok, max_len=8)
    torch.manual_seed(0)
    model = TransformerClassifier(ClassifierConfig.tiny(vocab_size=4, num_classes=2))
    history = train_classifier(model, data, data, epochs=6, batch_size=16, lr=3e-3, device="cpu", progress=False)
    assert [row["epoch"] for row in history.epochs] == list(range(1, 7))
    assert history.epochs[-1]["accuracy"] == 1.0 and "valid_loss" in history.epochs[-1]
    assert (predict(model, data, device="cpu") == data.labels).all() and model.training
