"""Hugging Face BERT checkpoints: the names of their weights in coursekit's BERT, reading and writing them.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``). Its weight
``encoder.layer.3.attention.self.query.weight`` is coursekit's ``encoder.layers.3.self_attn.q_proj.weight``.
:meth:`coursekit.bert.BertModel.from_pretrained` and ``save_pretrained`` are built on these functions, which
work on state dicts and plain dicts and so need no model class.

Book: chapter "BERT".
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# (Hugging Face name, coursekit name) of each weight's module, "{i}" standing for a layer number.
_NAMES = (
    ("embeddings.LayerNorm", "embeddings.norm"),
    ("encoder.layer.{i}.attention.self.query", "encoder.layers.{i}.self_attn.q_proj"),
    ("encoder.layer.{i}.attention.self.key", "encoder.layers.{i}.self_attn.k_proj"),
    ("encoder.layer.{i}.attention.self.value", "encoder.layers.{i}.self_attn.v_proj"),
    ("encoder.layer.{i}.attention.output.dense", "encoder.layers.{i}.self_attn.out_proj"),
    ("encoder.layer.{i}.attention.output.LayerNorm", "encoder.layers.{i}.norm1"),
    ("encoder.layer.{i}.intermediate.dense", "encoder.layers.{i}.linear1"),
    ("encoder.layer.{i}.output.dense", "encoder.layers.{i}.linear2"),
    ("encoder.layer.{i}.output.LayerNorm", "encoder.layers.{i}.norm2"),
    ("pooler.dense", "pooler"),
)
_HEAD_NAMES = (
    ("cls.predictions.transform.dense", "mlm.dense"),
    ("cls.predictions.transform.LayerNorm", "mlm.norm"),
    ("cls.predictions.decoder", "mlm.decoder"),
    ("cls.seq_relationship", "nsp"),
)
_HEAD_ALIASES = {"cls.predictions.bias": "mlm.decoder.bias"}  # HF stores the decoder bias here too
_IGNORED = ("embeddings.position_ids",)  # a buffer of 0..max_len-1 some checkpoints carry


def _rename(key: str, table: tuple[tuple[str, str], ...], reverse: bool = False) -> str:
    """Map one weight name between the two namings; names not in the table (e.g. embeddings) stay as they are."""
    for hf, ours in table:
        src, dst = (ours, hf) if reverse else (hf, ours)
        match = re.fullmatch(re.escape(src).replace(r"\{i\}", r"(\d+)") + r"\.(\w+)", key)
        if match:
            *layer, leaf = match.groups()
            leaf = {"gamma": "weight", "beta": "bias"}.get(leaf, leaf)  # TF-era layer norm names
            return dst.replace("{i}", layer[0]) + "." + leaf if layer else dst + "." + leaf
    return key


def hf_to_coursekit_key(key: str, with_heads: bool) -> str | None:
    """The coursekit name of a Hugging Face BERT weight, or None for one that is deliberately skipped.

    ``with_heads`` targets :class:`~coursekit.bert.BertForPreTraining` (encoder under ``bert.``, heads
    ``mlm.*``/``nsp.*``); otherwise :class:`~coursekit.bert.BertModel`, for which the heads (``cls.*``) are skipped.
    """
    body = key.removeprefix("bert.")
    if body in _IGNORED or body == "cls.predictions.decoder.weight":  # tied to the word embeddings
        return None
    if body.startswith("cls."):
        if not with_heads:
            return None
        return _HEAD_ALIASES.get(body) or _rename(body, _HEAD_NAMES)
    ours = _rename(body, _NAMES)
    return "bert." + ours if with_heads else ours


def read_hf_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read ``config.json`` (as a dict, for :meth:`coursekit.bert.BertConfig.from_hf_dict`) and the weights
    (``model.safetensors``, else ``pytorch_model.bin``) of a directory."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; from_pretrained needs a Hugging Face BERT directory")
    config = json.loads((path / "config.json").read_text())
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file  # an optional dependency, needed only here

        state = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    return config, state


def load_hf_state_dict(model: nn.Module, state: dict[str, Tensor], *, with_heads: bool,
                       source: str = "checkpoint") -> None:
    """Copy Hugging Face-named weights into ``model``, checking that every weight is there and fits.

    Args:
        model: a :class:`coursekit.bert.BertModel`, or a :class:`coursekit.bert.BertForPreTraining` with
            ``with_heads`` (its encoder under ``bert.``, the heads ``mlm.*`` and ``nsp.*``).
        state: the checkpoint's weights. source: names the checkpoint in messages.

    Raises:
        ValueError: listing unexpected weights, missing weights (heads excepted: those warn) and shape mismatches.
    """
    expected = {k: v for k, v in model.state_dict().items() if k != "mlm.decoder.weight"}  # tied, not loaded
    mapped, unexpected, mismatched = {}, [], []
    for key, value in state.items():
        ours = hf_to_coursekit_key(key, with_heads)
        if ours is None:
            continue
        if ours not in expected:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[ours].shape):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(expected[ours].shape)}")
        else:
            mapped[ours] = value
    missing = sorted(set(expected) - set(mapped))
    missing_heads = [k for k in missing if k.startswith(("mlm.", "nsp."))]
    missing_body = [k for k in missing if k not in missing_heads]
    problems = []
    if unexpected:
        problems.append(f"unexpected weights (not part of a BERT with this config): {sorted(unexpected)}")
    if missing_body:
        problems.append(f"missing weights (coursekit names): {missing_body}")
    if mismatched:
        problems.append(f"shape mismatches (does config.json match the weights?): {mismatched}")
    if problems:
        raise ValueError(f"cannot load {source} into {type(model).__name__}: " + "; ".join(problems))
    if missing_heads:
        warnings.warn(f"{source} has no pretraining heads; {sorted(missing_heads)} keep their random initialisation")
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name in mapped:
                tensor.copy_(mapped[name])


def write_hf_checkpoint(model: nn.Module, path: str | Path, architecture: str) -> Path:
    """Save ``config.json`` and ``model.safetensors`` under Hugging Face's names (the tied decoder weight is left out)."""
    from safetensors.torch import save_file  # an optional dependency, needed only here

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in model.state_dict().items():
        if key == "mlm.decoder.weight":
            continue
        if key.startswith(("mlm.", "nsp.")):
            hf = "cls.predictions.bias" if key == "mlm.decoder.bias" else _rename(key, _HEAD_NAMES, reverse=True)
        else:
            hf = _rename(key.removeprefix("bert."), _NAMES, reverse=True)
            hf = "bert." + hf if key.startswith("bert.") else hf
        state[hf] = value.detach().cpu().contiguous()
    config = {**model.config.to_hf_dict(), "architectures": [architecture]}
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, str(path / "model.safetensors"))
    return path
