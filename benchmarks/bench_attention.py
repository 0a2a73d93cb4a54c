"""Benchmark: coursekit.attention.MultiHeadAttention against torch.nn.MultiheadAttention(batch_first=True).

Times one forward + backward pass of self-attention at B=16, T=128, D=256, H=8 with the same weights,
for the fused path (need_weights=False) and the explicit path (need_weights=True). Both modules run
alternately in the same process, so load from other processes hits both alike; the median of many
repetitions is reported. On CUDA it repeats the comparison under bf16 autocast.

Run: python benchmarks/bench_attention.py [--reps 200] [--warmup 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor, nn

from coursekit.attention import MultiHeadAttention

B, T, D, H = 16, 128, 256, 8


def step(module: nn.Module, x: Tensor, need_weights: bool, device: str) -> None:
    """One forward + backward pass; synchronises so the clock measures the GPU work too."""
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
        out, _ = module(x, x, x, need_weights=need_weights)
    out.float().square().mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()


def median_times(modules: dict[str, nn.Module], x: Tensor, need_weights: bool, device: str,
                 reps: int, warmup: int) -> dict[str, float]:
    """Median seconds per step for each module, interleaving them rep by rep."""
    for _ in range(warmup):
        for module in modules.values():
            step(module, x, need_weights, device)
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(reps):
        for name, module in modules.items():
            x.grad = None
            start = time.perf_counter()
            step(module, x, need_weights, device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def run(device: str, reps: int, warmup: int) -> None:
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(D, H, batch_first=True).to(device)
    modules = {"torch": reference, "coursekit": MultiHeadAttention.from_torch(reference)}
    x = torch.randn(B, T, D, device=device, requires_grad=True)
    threads = f", {torch.get_num_threads()} threads" if device == "cpu" else ", bf16 autocast"
    print(f"\n{device.upper()}: forward + backward, self-attention B={B} T={T} D={D} H={H}{threads}, "
          f"median of {reps} (warm-up {warmup})")
    print(f"{'path':<28}{'torch (ms)':>12}{'coursekit (ms)':>16}{'ratio':>8}")
    for need_weights in (False, True):
        t = median_times(modules, x, need_weights, device, reps, warmup)
        label = "need_weights=False (fused)" if not need_weights else "need_weights=True"
        print(f"{label:<28}{t['torch'] * 1e3:>12.3f}{t['coursekit'] * 1e3:>16.3f}{t['coursekit'] / t['torch']:>7.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    run("cpu", args.reps, args.warmup)
    if torch.cuda.is_available():
        run("cuda", args.reps, args.warmup)
    print("\nratio = coursekit / torch; below 1 means coursekit is faster.")


if __name__ == "__main__":
    main()
