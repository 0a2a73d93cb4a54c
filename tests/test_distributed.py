"""coursekit.translate under DistributedDataParallel: two CPU processes (gloo) on one machine.

The entry point is run exactly as a user would run it: ``run(options)`` in processes started by
``torch.multiprocessing`` with torchrun's environment variables, and the command line under ``torchrun``.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from coursekit.train import load_checkpoint
from coursekit.transformer import Transformer
from coursekit.translate import Context, TranslateOptions, build_model, build_parser, load_task, run, train_loader

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = dict(task="en-de-numbers", lo=0, hi=300, d_model=16, nhead=2, num_layers=1, dim_feedforward=32,
               batch_size=16, max_steps=4, warmup_steps=4, valid_every=0, eval_split="none", device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One process of the group: the variables torchrun would set, then the same run() as the command line."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # A budget that never runs out: every step still asks rank 0's clock, so the broadcast runs on both ranks.
    result = run(TranslateOptions(**OPTIONS, time_budget_s=600.0))
    torch.save(result.model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_processes_keep_identical_weights_that_move(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    options = TranslateOptions(**OPTIONS)
    initial = build_model(options, load_task(options)).state_dict()
    assert rank0.keys() == initial.keys()
    for name in rank0:
        # Each rank read different batches; only the all-reduced gradients keep the copies equal.
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the ranks"
        assert not torch.equal(rank0[name], initial[name]), f"{name} did not change in training"


def test_each_process_reads_its_own_shard():
    options = TranslateOptions(**OPTIONS)
    task = load_task(options)
    shards = []
    for rank in (0, 1):
        loader = train_loader(task, 16, seed=0, context=Context(rank, 2, torch.device("cpu")))
        loader.sampler.set_epoch(1)
        shards.append({tuple(row[row != 0].tolist()) for batch in loader for row in batch.src})
    assert not shards[0] & shards[1]
    assert len(shards[0] | shards[1]) == len(task.train)  # sources are distinct in the numbers task


def test_the_command_line_runs_under_torchrun(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "coursekit.translate", "--numbers-from", "0", "--numbers-to", "300",
               "--d-model", "16", "--nhead", "2", "--num-layers", "1", "--dim-feedforward", "32",
               "--batch-size", "16", "--max-steps", "3", "--valid-every", "0", "--device", "cpu", "--checkpoint", str(tmp_path / "model.pt")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1, done.stdout  # rank 0 alone evaluates and reports
    assert printed[0]["train_steps"] == 3 and 0.0 <= printed[0]["exact_match"] <= 1.0 and printed[0]["n"] == 30
    checkpoint = load_checkpoint(tmp_path / "model.pt", Transformer)
    assert checkpoint.model.config.d_model == 16 and len(checkpoint.tgt_vocab) == checkpoint.model.config.tgt_vocab_size


def test_no_flag_is_swallowed_by_torchrun():
    """torchrun's argparse reads any prefix of its own flags (--lo of --log-dir) even after the module name."""
    from torch.distributed.run import get_args_parser

    theirs = [flag for action in get_args_parser()._actions for flag in action.option_strings]
    ours = [flag for action in build_parser()._actions for flag in action.option_strings
            if flag not in ("-h", "--help")]
    assert not [(mine, t) for mine in ours for t in theirs if t.startswith(mine)]
