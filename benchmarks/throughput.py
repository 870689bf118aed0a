"""Paper-size FQL training throughput, measured in one run: updates/s and achieved GFLOP/s against a plain matmul.

Sizes are cube-single's (observation 28, action 5), batch 256, 4x512 MLPs, 10 flow steps. Three loops over the same
math: a host loop like the paper's public code (numpy batch sampling, one jitted update per Python step), fqlcore's
scanned chunk with 1 seed, and 4 vmapped seeds. FLOPs per update come from XLA's cost analysis of the compiled update.
Runs unchanged on CPU or GPU:  python benchmarks/throughput.py [--seconds 20] [--seeds 4] [--hidden 512,512,512,512]
[--csv results/throughput.csv]
"""
from __future__ import annotations

import argparse
import csv
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from fqlcore import data, provenance, train
from fqlcore.agents import fql

OBS_DIM, ACTION_DIM, BATCH, DATASET_SIZE = 28, 5, 256, 100_000


def random_dataset(seed=0):
    rng = np.random.default_rng(seed)
    n = DATASET_SIZE
    return data.from_arrays(rng.normal(size=(n, OBS_DIM)), rng.uniform(-1, 1, (n, ACTION_DIM)), -rng.integers(0, 2, n),
                            rng.normal(size=(n, OBS_DIM)), np.ones(n))


def timed(fn, min_seconds):
    """Calls fn() (which must block) until min_seconds pass; returns calls per second."""
    fn()  # warm-up / compile
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or calls < 2:
        fn()
        calls += 1
    return calls / elapsed


def matmul_gflops(seconds, n=None):
    n = n or (8192 if jax.default_backend() == "gpu" else 2048)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    mm = jax.jit(lambda a: a @ a)
    return 2 * n**3 * timed(lambda: mm(a).block_until_ready(), seconds) / 1e9


def update_flops(state, batch):
    cost = jax.jit(fql.update).lower(state, batch).compile().cost_analysis()
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
    hidden_dims = tuple(int(h) for h in args.hidden.split(","))
    on_gpu = jax.default_backend() == "gpu"
    chunk_size = args.chunk or (1000 if on_gpu else 50)
    config = fql.Config(hidden_dims=hidden_dims)  # the paper's sizes unless --hidden says otherwise
    dataset = random_dataset()
    host = {k: np.asarray(v) for k, v in data.sample(dataset, jax.random.PRNGKey(0), DATASET_SIZE).items()}
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")

    states, keys = train.init_seeds(fql, config, dataset, max(args.seeds, 1))
    state = train.seed_slice(states, 0)
    flops = update_flops(state, data.sample(dataset, keys[0], BATCH))

    # 1. A host loop like the paper's code: numpy sampling on the host, one jitted update per step.
    update = jax.jit(fql.update)
    rng = np.random.default_rng(0)
    host_state = [state]

    def host_loop(n=chunk_size):
        s = host_state[0]
        for _ in range(n):
            idx = rng.integers(0, DATASET_SIZE, BATCH)
            s, metrics = update(s, {k: v[idx] for k, v in host.items()})
        jax.block_until_ready(metrics)
        host_state[0] = s

    host_rate = chunk_size * timed(host_loop, args.seconds)

    # 2. fqlcore's scanned chunk, 1 seed and N vmapped seeds.
    def scanned_rate(num_seeds):
        run = train.compile_chunk(fql, BATCH, chunk_size, seeds=num_seeds)
        carry = [jax.tree.map(lambda x: x[:num_seeds], states), keys[:num_seeds]]

        def step():
            s, k, m = run(carry[0], carry[1], dataset)
            jax.block_until_ready(m)
            carry[0], carry[1] = s, k

        return chunk_size * timed(step, args.seconds)

    scan_rate = scanned_rate(1)
    multi_rate = scanned_rate(args.seeds)
    peak = matmul_gflops(args.seconds / 2)
    rows = [
        ("host loop (paper-style), 1 seed", host_rate, host_rate),
        ("fqlcore scan, 1 seed", scan_rate, scan_rate),
        (f"fqlcore scan, {args.seeds} vmapped seeds", multi_rate, multi_rate * args.seeds),
    ]
    print(f"networks {'x'.join(map(str, hidden_dims))}; FLOPs per update (XLA cost analysis): {flops / 1e9:.2f} GFLOP; "
          f"matmul peak here: {peak:.0f} GFLOP/s")
    print(f"{'loop':40s} {'updates/s/seed':>15s} {'updates/s total':>16s} {'GFLOP/s':>9s} {'of matmul':>10s}")
    for name, per_seed, total in rows:
        gflops = total * flops / 1e9
        print(f"{name:40s} {per_seed:15.1f} {total:16.1f} {gflops:9.1f} {gflops / peak:9.0%}")
    print(f"speed-up of the scanned loop over the host loop: 1 seed {scan_rate / host_rate:.2f}x, "
          f"{args.seeds} seeds {multi_rate * args.seeds / host_rate:.2f}x (total updates/s)")
    if args.csv:
        write_csv(args.csv, rows, flops, peak, hidden_dims)


FIELDS = ["date", "commit", "device", "backend", "loop", "updates_per_s_per_seed", "updates_per_s_total",
          "gflop_per_update", "gflops", "matmul_gflops", "command", "hidden_dims"]


def write_csv(path, rows, flops, peak, hidden_dims):
    new = not os.path.exists(path)
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != FIELDS:  # appending under another header would shift every column
            raise SystemExit(f"{path} has the columns {header}, not {FIELDS}: write to another --csv file")
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        for name, per_seed, total in rows:
            writer.writerow({"date": provenance.now(), "commit": provenance.commit(), "device": provenance.device(),
                             "backend": jax.default_backend(), "loop": name, "updates_per_s_per_seed": f"{per_seed:.2f}",
                             "updates_per_s_total": f"{total:.2f}", "gflop_per_update": f"{flops / 1e9:.3f}",
                             "gflops": f"{total * flops / 1e9:.1f}", "matmul_gflops": f"{peak:.1f}",
                             "command": "python benchmarks/throughput.py " + " ".join(os.sys.argv[1:]),
                             "hidden_dims": "x".join(map(str, hidden_dims))})


if __name__ == "__main__":
    main()
