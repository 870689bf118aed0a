"""Paper-size FQL training throughput, measured in one run: updates/s and achieved GFLOP/s against a plain matmul.

Sizes are cube-single's (observation 28, action 5), batch 256, 4x512 MLPs, 10 flow steps. Three loops over the same
math: a host loop like the paper's public code (numpy batch sampling, one jitted update per Python step), fqlcore's
scanned chunk with 1 seed, and 4 vmapped seeds. FLOPs per update come from XLA's cost analysis of the compiled update.
The reference rate is the faster of two f32 matmuls measured in the same run, a large square one and one at the
update's own shapes. The loops and the matmuls run in interleaved rounds, and every figure is a median over rounds.
Runs unchanged on CPU or GPU:  python benchmarks/throughput.py [--seconds 20] [--seeds 4] [--hidden 512,512,512,512]
[--csv results/throughput.csv]
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from fqlcore import data, provenance, train
from fqlcore.agents import fql

OBS_DIM, ACTION_DIM, BATCH, DATASET_SIZE = 28, 5, 256, 100_000


def random_dataset(seed=0):
    rng = np.random.default_rng(seed)
    n = DATASET_SIZE
    return data.from_arrays(rng.normal(size=(n, OBS_DIM)), rng.uniform(-1, 1, (n, ACTION_DIM)), -rng.integers(0, 2, n),
                            rng.normal(size=(n, OBS_DIM)), np.ones(n))


def interleaved_rates(loops: dict, min_seconds: float, min_rounds: int = 5) -> dict:
    """Runs each loop once per round, round after round, until the loops have run ``min_seconds`` each on average;
    returns each loop's rate in every round. A shared cloud CPU drifts by 10-20% from minute to minute: interleaving
    puts every loop under the same drift, and medians over rounds (of rates, and of ratios between loops within a round)
    ignore its bursts.

    ``loops`` maps a name to ``(fn, work)``: fn() does ``work`` units (updates, FLOPs) and blocks until they are done.
    """
    for fn, _ in loops.values():
        fn()  # warm-up / compile
    rates, spent = {name: [] for name in loops}, {name: 0.0 for name in loops}
    while sum(spent.values()) < min_seconds * len(loops) or len(rates[next(iter(loops))]) < min_rounds:
        for name, (fn, work) in loops.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            spent[name] += elapsed
            rates[name].append(work / elapsed)
    return {name: np.asarray(r) for name, r in rates.items()}


def matmul_loop(rows: int, width: int):
    """A chain of f32 (rows, width) @ (width, width) products in one jit call: (fn, FLOPs per fn call).

    Square and large, it runs near the device's peak; at the update's own (batch, hidden) shapes, it is the most the
    update's matmuls can reach. Each call does enough products (100 GFLOP on a CPU, 2 TFLOP on a GPU) that the cost of
    launching it is lost in the noise."""
    flops_per_call = 2e12 if jax.default_backend() == "gpu" else 1e11
    products = max(1, round(flops_per_call / (2 * rows * width**2)))
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, width))
    w = jax.random.normal(jax.random.PRNGKey(1), (width, width)) / np.sqrt(width)  # keeps the chain's scale
    chain = jax.jit(lambda x, w: jax.lax.fori_loop(0, products, lambda _, y: y @ w, x))
    return (lambda: chain(x, w).block_until_ready()), products * 2 * rows * width**2


def chunk_loop(run, states, keys, dataset):
    """A compiled chunk (``train.compile_chunk``) as a loop for ``interleaved_rates``: each call runs one chunk on from
    where the last one ended, and blocks until it is done."""
    carry = [states, keys]

    def step():
        s, k, metrics = run(carry[0], carry[1], dataset)
        jax.block_until_ready(metrics)
        carry[0], carry[1] = s, k

    return step


def update_flops(state, batch):
    fresh = jax.jit(lambda s, b: fql.update(s, b))  # traced anew, even when jit has seen fql.update before
    cost = fresh.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="time each measurement for at least this long")
    parser.add_argument("--chunk", type=int, default=0, help="updates per scanned chunk (default: 50 CPU, 1000 GPU)")
    parser.add_argument("--seeds", type=int, default=4, help="vmapped seeds in the multi-seed measurement")
    parser.add_argument("--hidden", default="512,512,512,512", help="MLP sizes of every network (the paper's: 4x512)")
    parser.add_argument("--csv", default=None, help="append the figures to this CSV (with provenance)")
    args = parser.parse_args()
    if args.csv:
        check_csv(args.csv)
    hidden_dims = tuple(int(h) for h in args.hidden.split(","))
    on_gpu = jax.default_backend() == "gpu"
    chunk_size = args.chunk or (1000 if on_gpu else 50)
    config = fql.Config(hidden_dims=hidden_dims)  # the paper's sizes unless --hidden says otherwise
    dataset = random_dataset()
    host_data = {k: np.asarray(getattr(dataset, k)) for k in data.FIELDS}  # what the paper's code samples for FQL
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")

    states, keys = train.init_seeds(fql, config, dataset, max(args.seeds, 1))
    state = train.seed_slice(states, 0)
    flops = update_flops(state, data.sample(dataset, keys[0], BATCH))

    # 1. A host loop like the paper's code: numpy sampling on the host, one jitted update per step.
    update = jax.jit(fql.update)
    rng = np.random.default_rng(0)
    host_state = [state]

    def host_loop():
        s = host_state[0]
        for _ in range(chunk_size):
            idx = rng.integers(0, DATASET_SIZE, BATCH)
            s, metrics = update(s, {k: v[idx] for k, v in host_data.items()})
        jax.block_until_ready(metrics)
        host_state[0] = s

    # 2. fqlcore's scanned chunk, 1 seed and N vmapped seeds.
    def scanned_loop(num_seeds):
        run = train.compile_chunk(fql, BATCH, chunk_size, seeds=num_seeds)
        return chunk_loop(run, jax.tree.map(lambda x: x[:num_seeds], states), keys[:num_seeds], dataset)

    multi = f"fqlcore scan, {args.seeds} vmapped seeds"
    loops = {"host loop (paper-style), 1 seed": (host_loop, chunk_size),
             "fqlcore scan, 1 seed": (scanned_loop(1), chunk_size),
             multi: (scanned_loop(args.seeds), chunk_size * args.seeds),
             "matmul": matmul_loop(*(2 * [8192 if on_gpu else 2048])),
             "matmul at the update's shapes": matmul_loop(BATCH, max(hidden_dims))}
    rates = interleaved_rates(loops, args.seconds)
    square = rates.pop("matmul") / 1e9  # GFLOP/s in each round
    shaped = rates.pop("matmul at the update's shapes") / 1e9
    # The reference is the faster matmul of each round: on a shared CPU the large square one, which leans on the L3
    # cache that neighbours share, can fall below the small one.
    matmul = np.maximum(square, shaped)
    host_rates = rates["host loop (paper-style), 1 seed"]
    rounds = len(square)
    width = max(hidden_dims)
    print(f"networks {'x'.join(map(str, hidden_dims))}; FLOPs per update (XLA cost analysis): {flops / 1e9:.2f} GFLOP")
    print(f"matmul here, median of {rounds} interleaved rounds: square {np.median(square):.0f} GFLOP/s (range "
          f"{square.min():.0f}-{square.max():.0f}); at the update's shapes ({BATCH}x{width} @ {width}x{width}) "
          f"{np.median(shaped):.0f} GFLOP/s ({shaped.min():.0f}-{shaped.max():.0f}); the faster of the two in each "
          f"round: {np.median(matmul):.0f} GFLOP/s")
    print(f"{'loop':40s} {'updates/s/seed':>15s} {'updates/s total':>16s} {'range':>13s} {'GFLOP/s':>9s} "
          f"{'of matmul':>10s} {'vs host':>8s}")
    rows = []
    for name, total in rates.items():
        per_seed = total / (args.seeds if name == multi else 1)
        gflops = total * flops / 1e9
        print(f"{name:40s} {np.median(per_seed):15.1f} {np.median(total):16.1f} {total.min():6.1f}-{total.max():<6.1f} "
              f"{np.median(gflops):9.1f} {np.median(gflops / matmul):9.0%} {np.median(total / host_rates):7.2f}x")
        rows.append((name, np.median(per_seed), np.median(total)))
    print("medians over rounds; 'of matmul' (of the faster matmul) and 'vs host' are medians of the ratios within each "
          "round")
    if args.csv:
        write_csv(args.csv, rows, flops, float(np.median(matmul)), hidden_dims)


FIELDS = ["date", "commit", "device", "backend", "loop", "updates_per_s_per_seed", "updates_per_s_total",
          "gflop_per_update", "gflops", "matmul_gflops", "command", "hidden_dims"]


def check_csv(path):
    """Before measuring: appending under another header would shift every column."""
    try:
        provenance.check_csv(path, FIELDS)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def write_csv(path, rows, flops, peak, hidden_dims):
    stamp = {"date": provenance.now(), "commit": provenance.commit(), "device": provenance.device(),
             "backend": jax.default_backend(), "command": provenance.command(), "hidden_dims": "x".join(map(str, hidden_dims))}
    provenance.append_csv(path, FIELDS, [
        {**stamp, "loop": name, "updates_per_s_per_seed": f"{per_seed:.2f}", "updates_per_s_total": f"{total:.2f}",
         "gflop_per_update": f"{flops / 1e9:.3f}", "gflops": f"{total * flops / 1e9:.1f}", "matmul_gflops": f"{peak:.1f}"}
        for name, per_seed, total in rows])


if __name__ == "__main__":
    main()
