"""coursekit.train: the loop learns, stops when told, is seeded, and checkpoints round-trip."""

import dataclasses
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from coursekit.data import TranslationDataset, make_loader, number_task
from coursekit.decoding import greedy_decode
from coursekit.seq2seq import (
    AttentionOnlyConfig,
    AttentionOnlyEncoderDecoder,
    BahdanauConfig,
    BahdanauEncoderDecoder,
    RNNConfig,
    RNNEncoderDecoder,
)
from coursekit.train import History, evaluate, evaluating, load_checkpoint, save_checkpoint, sequence_loss, train
from tests.helpers import STAGE_IDS, STAGES

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def task():
    # English words -> German morphemes: "four hundred thirty nine" -> "vier hundert neun und dreißig"
    return number_task(0, 1000, "en", "de")


def loader(task, pairs, batch_size=8, shuffle=True):
    return make_loader(TranslationDataset(pairs, task.src_vocab, task.tgt_vocab), batch_size, shuffle)


def build(cls, config_cls, task, seed=0, **changes):
    torch.manual_seed(seed)
    return cls(dataclasses.replace(config_cls.tiny(len(task.src_vocab), len(task.tgt_vocab)), **changes))


@pytest.mark.parametrize(("cls", "config_cls"), STAGES, ids=STAGE_IDS)
def test_every_stage_memorises_a_handful_of_examples(cls, config_cls, task):
    pairs = task.train[:8]
    model = build(cls, config_cls, task)
    before = evaluate(model, loader(task, pairs, shuffle=False), device="cpu")
    history = train(model, loader(task, pairs), max_steps=100, lr=0.02, device="cpu", progress=False)
    after = evaluate(model, loader(task, pairs, shuffle=False), device="cpu")
    assert before["exact_match"] == 0.0
    assert after["exact_match"] == 1.0 and after["token_accuracy"] == 1.0
    assert history.loss[-1] < history.loss[0] / 20


def test_sequence_loss_is_cross_entropy_over_real_tokens():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(3, 5, 7, generator=g), torch.randint(3, 7, (3, 5), generator=g)
    mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    expected = F.cross_entropy(logits.transpose(1, 2), target.masked_fill(mask, -100), ignore_index=-100)
    torch.testing.assert_close(sequence_loss(logits, target, mask), expected)


def test_label_smoothing_matches_the_formula():
    """Vaswani et al. (2017, section 5.4): q(k) = (1 - eps) [k = y] + eps / V, cross-entropy against q."""
    torch.manual_seed(11)
    logits, target = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    mask = torch.tensor([[False, False, True], [False, False, False]])
    eps = 0.1
    log_p = logits[~mask].log_softmax(-1)  # (N, V)
    q = torch.full_like(log_p, eps / 5).scatter_add(1, target[~mask][:, None], torch.full((5, 1), 1 - eps))
    expected = -(q * log_p).sum(-1).mean()
    torch.testing.assert_close(sequence_loss(logits, target, mask, label_smoothing=eps), expected)
    plain = F.cross_entropy(logits[~mask], target[~mask])
    torch.testing.assert_close(sequence_loss(logits, target, mask, label_smoothing=0.0), plain)


def test_evaluate_agrees_with_decoding_each_sequence_by_hand(task):
    """Metrics recomputed one sequence at a time through Vocab.decode, a path evaluate never takes."""
    pairs = task.valid[:24]
    model = build(BahdanauEncoderDecoder, BahdanauConfig, task)
    train(model, loader(task, task.train[:64], batch_size=16), max_steps=40, lr=0.02, device="cpu", progress=False)
    metrics = evaluate(model.eval(), loader(task, pairs, batch_size=10, shuffle=False), device="cpu")
    exact, correct, total = 0, 0, 0
    for src_tokens, tgt_tokens in pairs:
        src = torch.tensor([task.src_vocab.encode(src_tokens)])
        mask = torch.zeros_like(src, dtype=torch.bool)
        out = greedy_decode(model, src, mask, start_id=1, stop_id=2, max_len=len(tgt_tokens) + 1)
        exact += task.tgt_vocab.decode(out.tokens[0]) == tgt_tokens and int(out.lengths[0]) == len(tgt_tokens) + 1
        tgt_in = torch.tensor([task.tgt_vocab.encode(tgt_tokens, add_start=True)])
        predicted = model(src, mask, tgt_in).logits.argmax(-1)[0].tolist()
        expected = task.tgt_vocab.encode(tgt_tokens, add_stop=True)
        correct += sum(p == e for p, e in zip(predicted, expected))
        total += len(expected)
    assert 0 < correct < total  # a half-trained model, so both branches of the comparison are exercised
    assert metrics["exact_match"] == pytest.approx(exact / len(pairs))
    assert metrics["token_accuracy"] == pytest.approx(correct / total)


def test_stopping_rules_and_history(task):
    model = build(RNNEncoderDecoder, RNNConfig, task)
    history = train(model, loader(task, task.train[:40]), max_steps=7, device="cpu", progress=False)
    assert history.steps == list(range(7)) and len(history.loss) == len(history.lr) == 7
    history = train(model, loader(task, task.train[:40]), epochs=2, device="cpu", progress=False,
                    valid_loader=loader(task, task.valid[:16], shuffle=False))
    assert [row["epoch"] for row in history.epochs] == [1, 2]
    assert [row["step"] for row in history.epochs] == [5, 10]  # 40 pairs / batch 8 = 5 steps an epoch
    assert {"train_loss", "valid_loss", "token_accuracy", "exact_match", "time_s"} <= set(history.epochs[0])
    history = train(model, loader(task, task.train[:40]), time_budget_s=0.0, device="cpu", progress=False)
    assert len(history.loss) == 1  # the budget is checked after each step


def test_same_seed_same_run_and_other_seed_another(task):
    def run(seed):
        model = build(BahdanauEncoderDecoder, BahdanauConfig, task, dropout=0.3)
        return train(model, loader(task, task.train[:32]), max_steps=4, seed=seed, device="cpu", progress=False).loss

    assert run(0) == run(0)
    assert run(0) != run(1)  # the seed drives dropout, so this comparison can fail


def test_scheduler_is_stepped_after_every_update(task):
    model = build(RNNEncoderDecoder, RNNConfig, task)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    warm_up = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.25, end_factor=1.0, total_iters=3)
    history = train(model, loader(task, task.train[:40]), max_steps=5, optimizer=optimizer, scheduler=warm_up,
                    device="cpu", progress=False)
    assert history.lr == pytest.approx([0.5, 0.75, 1.0, 1.0, 1.0])  # the rate after each step


def test_checkpoint_round_trip_reproduces_outputs(task, tmp_path):
    path = tmp_path / "model.pt"
    model = build(AttentionOnlyEncoderDecoder, AttentionOnlyConfig, task)
    history = train(model, loader(task, task.train[:16]), epochs=1, device="cpu", progress=False, checkpoint_path=path)
    saved = load_checkpoint(path, AttentionOnlyEncoderDecoder)
    assert saved.model.config == model.config
    assert saved.src_vocab == task.src_vocab and saved.tgt_vocab == task.tgt_vocab
    assert saved.history == history and saved.optimizer_state is not None
    batch = next(iter(loader(task, task.valid[:8], shuffle=False)))
    model.eval(), saved.model.eval()
    assert torch.equal(saved.model(batch.src, batch.src_key_padding_mask, batch.tgt_in).logits,
                       model(batch.src, batch.src_key_padding_mask, batch.tgt_in).logits)


def test_checkpoint_of_another_class_is_refused(task, tmp_path):
    save_checkpoint(tmp_path / "rnn.pt", build(RNNEncoderDecoder, RNNConfig, task))
    with pytest.raises(ValueError, match="holds a RNNEncoderDecoder, not a BahdanauEncoderDecoder"):
        load_checkpoint(tmp_path / "rnn.pt", BahdanauEncoderDecoder)
    loaded = load_checkpoint(tmp_path / "rnn.pt", RNNEncoderDecoder)
    assert loaded.src_vocab is None and loaded.history is None


def test_history_records_formats_and_survives_a_dict_round_trip():
    history = History()
    history.record_step(0, 2.0, 0.1)
    history.record_step(1, 1.0, 0.1)
    history.epochs.append({"epoch": 1, "step": 2})
    assert history == History(steps=[0, 1], loss=[2.0, 1.0], lr=[0.1, 0.1], epochs=[{"epoch": 1, "step": 2}])
    assert History.from_dict(history.to_dict()) == history
    assert History.format_row({"epoch": 3, "step": 120, "train_loss": 0.421337, "exact_match": 1.0}) == \
        "epoch=3 step=120 train_loss=0.4213 exact_match=1"


def test_evaluating_switches_dropout_off_and_restores_the_mode_even_on_an_error():
    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    with evaluating(model):
        assert not model.training and not model[0].training
    assert model.training
    model.eval()
    with evaluating(model):
        pass
    assert not model.training  # a model in eval mode stays there
    model.train()
    with pytest.raises(RuntimeError, match="boom"), evaluating(model):
        raise RuntimeError("boom")
    assert model.training


class Points(NamedTuple):
    """A batch for a model that is not an encoder-decoder: points x (B, 2) and their class y (B,)."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device):
        return Points(self.x.to(device), self.y.to(device))


def test_the_loop_trains_any_model_with_its_own_loss_and_validation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    data = [Points(x[i : i + 16], (x[i : i + 16].sum(1) > 0).long()) for i in range(0, 64, 16)]
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)

    def loss_fn(model, batch):
        return F.cross_entropy(model(batch.x), batch.y)

    def accuracy(model, loader, device):
        correct = sum(int((model(b.x).argmax(1) == b.y).sum()) for b in loader)
        return {"loss": sum(loss_fn(model, b).item() for b in loader) / len(loader), "accuracy": correct / 64}

    history = train(model, data, epochs=6, lr=0.1, device="cpu", progress=False, loss_fn=loss_fn,
                    evaluate_fn=accuracy, valid_loader=data, valid_every=3)
    assert len(history.loss) == 24 and history.loss[-1] < history.loss[0]
    assert ["valid_loss" in row for row in history.epochs] == [False, False, True, False, False, True]
    assert history.epochs[-1]["accuracy"] > 0.9 and history.epochs[-1]["valid_loss"] < history.epochs[2]["valid_loss"]
    with pytest.raises(ValueError, match="valid_every"):
        train(model, data, epochs=1, device="cpu", progress=False, loss_fn=loss_fn, valid_every=0)


def test_bad_arguments_are_named(task):
    model = build(RNNEncoderDecoder, RNNConfig, task)
    train_loader = loader(task, task.train[:8])
    with pytest.raises(ValueError, match="needs a stopping rule"):
        train(model, train_loader, device="cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    with pytest.raises(ValueError, match="pass that optimizer too"):
        train(model, train_loader, max_steps=1, scheduler=scheduler, device="cpu")
    with pytest.raises(ValueError, match="different optimizer"):
        train(model, train_loader, max_steps=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
              scheduler=scheduler, device="cpu")
    with pytest.raises(ValueError, match=r"must be \(B, T, V\)"):
        sequence_loss(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_under_bf16_autocast_on_cuda(task):
    model = build(BahdanauEncoderDecoder, BahdanauConfig, task)
    pairs = task.train[:8]
    history = train(model, loader(task, pairs), max_steps=100, lr=0.02, device="cuda", progress=False)
    assert next(model.parameters()).is_cuda and history.loss[-1] < history.loss[0] / 10
    assert evaluate(model, loader(task, pairs, shuffle=False), device="cuda")["exact_match"] == 1.0
