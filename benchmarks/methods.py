"""Training and inference cost of every method at cube-double's sizes, as ratios to FQL (the paper's Figures 9 and 11).

Observation 40, action 5, batch 256, the paper's 4x512 networks, 10 flow steps, IFQL with 32 samples. Training: the
scanned chunk of fqlcore.train (updates/s); inference: one jitted ``act`` on a batch of one observation (the cost of
acting in one environment) and on 256. Random data: only the cost is measured.
Runs unchanged on CPU or GPU:  python benchmarks/methods.py [--seconds 5] [--csv results/methods_timing.csv]
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from fqlcore import agents, data, provenance, train

OBS_DIM, ACTION_DIM, BATCH = 40, 5, 256
METHODS = ("fql", "bc", "iql", "rebrac", "fawac", "fbrac", "ifql")


def rate(fn, seconds):
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        fn()
        calls += 1
    return calls / elapsed


def measure(method, dataset, chunk, seconds):
    agent = agents.get(method)
    states, keys = train.init_seeds(agent, agent.Config(), dataset, seeds=1)
    run = train.compile_chunk(agent, BATCH, chunk)
    carry = [states, keys]

    def step():
        s, k, m = run(carry[0], carry[1], dataset)
        jax.block_until_ready(m)
        carry[0], carry[1] = s, k

    updates = chunk * rate(step, seconds)
    state = train.seed_slice(carry[0], 0)
    act = jax.jit(agent.act)
    key = jax.random.PRNGKey(0)
    costs = {}
    for n in (1, 256):
        obs = dataset.observations[:n]
        costs[n] = 1.0 / rate(lambda: act(state, obs, key).block_until_ready(), seconds / 2)
    return updates, costs[1], costs[256]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--chunk", type=int, default=0, help="updates per chunk (default 10 CPU, 500 GPU)")
    parser.add_argument("--csv", default=None, help="append the figures to this CSV (with provenance)")
    args = parser.parse_args()
    chunk = args.chunk or (500 if jax.default_backend() == "gpu" else 10)
    rng = np.random.default_rng(0)
    n = 10_000
    dataset = data.from_arrays(rng.normal(size=(n, OBS_DIM)), rng.uniform(-1, 1, (n, ACTION_DIM)), rng.normal(size=n),
                               rng.normal(size=(n, OBS_DIM)), np.ones(n))
    print(f"device: {provenance.device()}, jax {jax.__version__}")
    results = {m: measure(m, dataset, chunk, args.seconds) for m in METHODS}
    fql_updates, fql_act1, fql_act256 = results["fql"]
    print(f"{'method':8s} {'updates/s':>10s} {'train time / FQL':>17s} {'act (1) ms':>11s} {'/ FQL':>6s} "
          f"{'act (256) ms':>13s} {'/ FQL':>6s}")
    rows = []
    for m, (updates, act1, act256) in results.items():
        row = {"method": m, "updates_per_s": updates, "train_time_ratio_to_fql": fql_updates / updates,
               "act_1_ms": 1e3 * act1, "act_1_ratio_to_fql": act1 / fql_act1, "act_256_ms": 1e3 * act256,
               "act_256_ratio_to_fql": act256 / fql_act256}
        rows.append(row)
        print(f"{m:8s} {updates:10.1f} {row['train_time_ratio_to_fql']:17.2f} {row['act_1_ms']:11.2f} "
              f"{row['act_1_ratio_to_fql']:6.2f} {row['act_256_ms']:13.2f} {row['act_256_ratio_to_fql']:6.2f}")
    if args.csv:
        fields = ["date", "commit", "device"] + list(rows[0]) + ["command"]
        stamp = {"date": provenance.now(), "commit": provenance.commit(), "device": provenance.device(),
                 "command": provenance.command()}
        provenance.append_csv(args.csv, fields, [
            {**stamp, **{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}} for row in rows])


if __name__ == "__main__":
    main()
