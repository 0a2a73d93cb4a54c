"""coursekit.viz: every plot draws the data it was given and reads on its own (title, labels, legend, colorbar)."""

import matplotlib

matplotlib.use("Agg")  # no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from coursekit.train import History  # noqa: E402
from coursekit.viz import (  # noqa: E402
    plot_attention,
    plot_attention_grid,
    plot_length_sweep,
    plot_lr_schedule,
    plot_positional_encodings,
    plot_training_curves,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def history(with_validation=True):
    rows = [{"epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "time_s": float(e)} for e in (1, 2, 3)]
    if with_validation:
        for row, (loss, tokens, exact) in zip(rows, [(1.5, 0.4, 0.1), (0.8, 0.7, 0.5), (0.3, 0.95, 0.9)]):
            row.update(valid_loss=loss, token_accuracy=tokens, exact_match=exact)
    loss = list(np.linspace(3.0, 0.2, 30))
    return History(steps=list(range(30)), loss=loss, lr=[1e-3] * 30, epochs=rows)


def labelled(ax):
    return bool(ax.get_title()) and bool(ax.get_xlabel()) and bool(ax.get_ylabel())


def test_training_curves_show_the_recorded_numbers():
    h = history()
    figure = plot_training_curves(h, smoothing=5)
    loss_ax, accuracy_ax = figure.axes
    assert labelled(loss_ax) and labelled(accuracy_ax) and figure._suptitle.get_text()
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    np.testing.assert_allclose(lines["train loss (per step)"].get_ydata(), h.loss)
    np.testing.assert_allclose(lines["train loss (5-step mean)"].get_ydata()[0], np.mean(h.loss[:5]))
    np.testing.assert_allclose(lines["validation loss (per epoch)"].get_xdata(), [10, 20, 30])
    accuracy = {line.get_label(): line for line in accuracy_ax.get_lines()}
    np.testing.assert_allclose(accuracy["exact match (greedy)"].get_ydata(), [0.1, 0.5, 0.9])
    np.testing.assert_allclose(accuracy["token accuracy"].get_ydata(), [0.4, 0.7, 0.95])
    assert loss_ax.get_legend() is not None and accuracy_ax.get_legend() is not None


def test_training_curves_take_a_checkpointed_dict_and_say_when_accuracy_is_missing():
    figure = plot_training_curves(history(with_validation=False).to_dict())
    accuracy_ax = figure.axes[1]
    assert not accuracy_ax.get_lines()
    assert any("no validation loader" in text.get_text() for text in accuracy_ax.texts)


def test_training_curves_reject_empty_or_foreign_histories():
    with pytest.raises(ValueError, match="at least one step"):
        plot_training_curves(History())
    with pytest.raises(ValueError, match="lacks"):
        plot_training_curves({"loss": [1.0]})


def test_length_sweep_draws_one_line_per_model():
    results = {"RNN": {"1-10": 0.9, "11-20": 0.5, "21-30": 0.1},
               "Bahdanau": {"1-10": 1.0, "11-20": 0.99, "21-30": 0.97}}
    ax = plot_length_sweep(results)
    assert labelled(ax)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["RNN", "Bahdanau"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [1.0, 0.99, 0.97])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1-10", "11-20", "21-30"]


def test_length_sweep_rejects_mismatched_buckets():
    with pytest.raises(ValueError, match="'B' has buckets"):
        plot_length_sweep({"A": {"short": 1.0, "long": 0.5}, "B": {"short": 1.0}})
    with pytest.raises(ValueError, match="empty"):
        plot_length_sweep({})


def test_attention_heat_map_has_a_colorbar_and_labels():
    weights = torch.softmax(torch.randn(1, 3, 4), dim=-1)
    ax = plot_attention(weights, keys=["a", "b", "c", "d"], queries=["x", "y", "z"], title="Weights")
    assert labelled(ax) and ax.get_title() == "Weights"
    assert len(ax.figure.axes) == 2  # the heat map and its colorbar
    np.testing.assert_allclose(ax.get_images()[0].get_array(), weights[0].numpy())
    with pytest.raises(ValueError, match="one \\(T, S\\) matrix"):
        plot_attention(torch.rand(2, 3, 4))


def test_attention_grid_lr_schedule_and_positions_are_labelled():
    weights = torch.softmax(torch.randn(2, 3, 4, 5), dim=-1)  # (L, H, T, S)
    figure = plot_attention_grid(weights, keys=list("abcde"), queries=list("wxyz"), title="Cross-attention")
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == 6 and panels[0].get_title() == "layer 1, head 1"
    assert len(figure.axes) == 7  # six panels and one colorbar
    assert [t.get_text() for t in panels[0].get_xticklabels()] == list("abcde")
    assert figure.get_suptitle() == "Cross-attention" and panels[-1].get_xlabel()
    assert [t.get_text() for t in panels[0].get_yticklabels()] == list("wxyz")
    with pytest.raises(ValueError, match="3 keys labels for 5 columns"):
        plot_attention_grid(weights, keys=list("abc"))
    with pytest.raises(ValueError, match=r"\(L, H, T, S\)"):
        plot_attention_grid(weights[0, 0])
    for figure in (plot_lr_schedule([128, 512], 400, total_steps=2000), plot_positional_encodings(50, 32)):
        assert figure.get_suptitle() or figure.axes[0].get_title()
        assert all(ax.get_xlabel() and ax.get_ylabel() for ax in figure.axes if ax.get_title())
