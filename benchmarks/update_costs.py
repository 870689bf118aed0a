"""What each part of the paper-size FQL update costs on this device, beside the matmuls that do its FLOPs.

The update (fqlcore's scanned chunk, 1 seed) runs in interleaved rounds beside what-if variants that each drop one
piece: the critic's LayerNorm, GELU (replaced by the identity), Adam (replaced by plain SGD), or 9 of the 10 Euler
steps. They change the math, so they are for pricing only; the difference in time per update is what the piece costs.
FLOPs come from XLA's cost analysis; "at matmul speed" is the time those FLOPs take at the rate of a matmul at the
update's own shapes, measured in the same rounds.
Runs unchanged on CPU or GPU:  python benchmarks/update_costs.py [--seconds 10] [--hidden 512,512,512,512]
"""
from __future__ import annotations

import argparse
import contextlib

import flax.linen as nn
import jax
import numpy as np
import optax

import throughput
from fqlcore import data, train
from fqlcore.agents import base, fql


def sgd(state, grads, tau):
    """Adam's stand-in: params - lr * grads, then the same target update."""
    params = jax.tree.map(lambda p, g: p - state.config.lr * g, state.params, grads)
    targets = {k: optax.incremental_update(state.params[k], t, tau) for k, t in state.target_params.items()}
    return state.replace(params=params, target_params=targets, step=state.step + 1)


@contextlib.contextmanager
def patched(module, name, value):
    """Swaps ``module.name`` while a variant is traced; the compiled program keeps it after the swap is undone."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="time each variant for about this long")
    parser.add_argument("--chunk", type=int, default=0, help="updates per scanned chunk (default: 50 CPU, 1000 GPU)")
    parser.add_argument("--hidden", default="512,512,512,512", help="MLP sizes of every network (the paper's: 4x512)")
    args = parser.parse_args()
    hidden_dims = tuple(int(h) for h in args.hidden.split(","))
    chunk_size = args.chunk or (1000 if jax.default_backend() == "gpu" else 50)
    dataset = throughput.random_dataset()
    paper = fql.Config(hidden_dims=hidden_dims)
    variants = {"the update (paper)": (paper, contextlib.nullcontext()),
                "without the critic's LayerNorm": (fql.Config(hidden_dims=hidden_dims, critic_layer_norm=False),
                                                   contextlib.nullcontext()),
                "GELU -> identity": (paper, patched(nn, "gelu", lambda x: x)),
                "Adam -> SGD": (paper, patched(base, "apply_gradients", sgd)),
                "1 Euler step instead of 10": (fql.Config(hidden_dims=hidden_dims, flow_steps=1),
                                               contextlib.nullcontext())}
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    loops, flops = {}, {}
    for name, (config, patch) in variants.items():
        states, keys = train.init_seeds(fql, config, dataset, 1)
        with patch:  # trace and compile now, under the swap
            batch = data.sample(dataset, keys[0], throughput.BATCH)
            flops[name] = throughput.update_flops(train.seed_slice(states, 0), batch)
            step = throughput.chunk_loop(train.compile_chunk(fql, throughput.BATCH, chunk_size), states, keys, dataset)
            step()
        loops[name] = (step, chunk_size)
    loops["matmul"] = throughput.matmul_loop(throughput.BATCH, max(hidden_dims))
    rates = throughput.interleaved_rates(loops, args.seconds)
    matmul = rates.pop("matmul") / 1e9
    ms = {name: 1e3 / r for name, r in rates.items()}  # ms per update, in each round
    paper_ms = ms["the update (paper)"]
    print(f"networks {'x'.join(map(str, hidden_dims))}; matmul at the update's shapes: {np.median(matmul):.0f} GFLOP/s "
          f"(median of {len(matmul)} interleaved rounds)")
    print(f"{'variant':32s} {'GFLOP':>7s} {'ms/update':>10s} {'at matmul speed':>16s} {'saves':>14s}")
    for name, t in ms.items():
        at_matmul = 1e3 * flops[name] / 1e9 / matmul
        saves = paper_ms - t  # within each round
        print(f"{name:32s} {flops[name] / 1e9:7.3f} {np.median(t):10.2f} {np.median(at_matmul):16.2f} "
              f"{np.median(saves):6.2f} ({np.median(saves / paper_ms):4.0%})")
    print("medians over rounds; 'saves' is the variant's time per update subtracted from the paper update's in the "
          "same round")


if __name__ == "__main__":
    main()
