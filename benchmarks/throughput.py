"""Paper-size FQL training throughput, measured in one run: updates/s, achieved GFLOP/s against a plain matmul, and the
predicted time of a paper-scale row.

Sizes are cube-single's (observation 28, action 5), batch 256, 4x512 MLPs, 10 flow steps. The loops run the same math:
a host loop like the paper's public code (numpy batch sampling, one jitted update per Python step), and fqlcore's
scanned chunk for each number of vmapped seeds in ``--seeds`` (a sweep: more seeds in one program fill a GPU that one
small network leaves idle), each matmul precision in ``--precision`` and each chunk size in ``--chunk``. FLOPs per update
come from XLA's cost analysis of the compiled update. The reference rate is the faster of two f32 matmuls measured in
the same run, a large square one and one at the update's own shapes. The loops and the matmuls run in interleaved
rounds, and every figure is a median over rounds.

A paper-scale row is 8 seeds x 1M updates (book/method.md): with n vmapped seeds it takes ceil(8 / n) programs of 1M updates
each, so its predicted training time is ceil(8 / n) x 1M / (updates/s per seed) (``reproduce.training_hours``),
before evaluation and data.

Matmul precision: ``default`` is what the paper's code ran with (JAX's default: f32 on a CPU, TF32 tensor cores on an
A100/H100); ``float32`` forces full f32, ``bfloat16`` trades more accuracy for speed. With more than one precision, the
benchmark also trains ``--compare-updates`` updates from the same start under each one and prints how far its losses are
from full f32's.

Runs unchanged on CPU or GPU:  python benchmarks/throughput.py [--seconds 20] [--seeds 1,4,8,16,32]
[--precision default,float32,bfloat16] [--chunk 1000] [--hidden 512,512,512,512] [--csv results/throughput.csv]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from fqlcore import data, provenance, reproduce, train
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


PRECISIONS = ("default", "float32", "tensorfloat32", "bfloat16")


def whole_numbers(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas, e.g. 1,4,8, got "
                                         f"{text!r}")
    return values


def precisions(text: str) -> list[str]:
    values = text.split(",")
    unknown = [v for v in values if v not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown matmul precision {unknown}: expected some of {', '.join(PRECISIONS)}"
                                         ", separated by commas")
    return values


def under_precision(precision: str, fn):
    """``fn`` traced, compiled and run under ``jax.default_matmul_precision(precision)`` ("default": JAX's own)."""
    if precision == "default":
        return fn

    def wrapped(*args):
        with jax.default_matmul_precision(precision):
            return fn(*args)

    return wrapped


def loop_name(seeds: int, precision: str, chunk: int, sweep_precision: bool, sweep_chunk: bool) -> str:
    name = f"fqlcore scan, {seeds} vmapped seeds" if seeds > 1 else "fqlcore scan, 1 seed"
    if sweep_precision:
        name += f", {precision} matmuls"
    if sweep_chunk:
        name += f", chunk {chunk}"
    return name


def loss_drift(states, keys, dataset, precision: str, updates: int) -> float:
    """The largest relative difference between the mean losses of ``updates`` updates under ``precision`` and under
    full f32, from the same start and the same batches."""
    losses = {}
    for p in (precision, "float32"):
        with jax.default_matmul_precision(p):
            run = train.compile_chunk(fql, BATCH, updates, seeds=1)
            _, _, metrics = run(jax.tree.map(lambda x: x[:1], states), keys[:1], dataset)
        losses[p] = {k: float(v[0]) for k, v in jax.device_get(metrics).items() if "loss" in k}
    return max(abs(losses[precision][k] - v) / max(abs(v), 1e-8) for k, v in losses["float32"].items())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="time each measurement for at least this long")
    parser.add_argument("--chunk", type=whole_numbers, default=None,
                        help="updates per scanned chunk, one or a sweep such as 100,1000,5000 (default: 50 CPU, 1000 GPU)")
    parser.add_argument("--seeds", type=whole_numbers, default=[1, 4],
                        help="vmapped seeds per program, a sweep such as 1,4,8,16,32 (default: 1,4)")
    parser.add_argument("--precision", type=precisions, default=["default"],
                        help=f"matmul precisions to measure, some of {','.join(PRECISIONS)} (default: default)")
    parser.add_argument("--compare-updates", type=int, default=200, help="updates in the precision comparison")
    parser.add_argument("--hidden", default="512,512,512,512", help="MLP sizes of every network (the paper's: 4x512)")
    parser.add_argument("--csv", default=None, help="append the figures to this CSV (with provenance)")
    args = parser.parse_args()
    if args.csv:
        check_csv(args.csv)
    hidden_dims = tuple(int(h) for h in args.hidden.split(","))
    on_gpu = jax.default_backend() == "gpu"
    chunk_sizes = args.chunk or [1000 if on_gpu else 50]
    config = fql.Config(hidden_dims=hidden_dims)  # the paper's sizes unless --hidden says otherwise
    dataset = random_dataset()
    host_data = {k: np.asarray(getattr(dataset, k)) for k in data.FIELDS}  # what the paper's code samples for FQL
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, default matmul "
          f"precision: {jax.config.jax_default_matmul_precision or 'JAX default (TF32 on A100/H100 GPUs, f32 on CPU)'}")

    states, keys = train.init_seeds(fql, config, dataset, max(args.seeds))
    state = train.seed_slice(states, 0)
    flops = update_flops(state, data.sample(dataset, keys[0], BATCH))

    # 1. A host loop like the paper's code: numpy sampling on the host, one jitted update per step.
    update = jax.jit(fql.update)
    rng = np.random.default_rng(0)
    host_state = [state]
    host_chunk = chunk_sizes[0]

    def host_loop():
        s = host_state[0]
        for _ in range(host_chunk):
            idx = rng.integers(0, DATASET_SIZE, BATCH)
            s, metrics = update(s, {k: v[idx] for k, v in host_data.items()})
        jax.block_until_ready(metrics)
        host_state[0] = s

    # 2. fqlcore's scanned chunk for every (seeds, precision, chunk) of the sweep.
    def scanned_loop(num_seeds, precision, chunk_size):
        run = under_precision(precision, train.compile_chunk(fql, BATCH, chunk_size, seeds=num_seeds))
        return chunk_loop(run, jax.tree.map(lambda x: x[:num_seeds], states), keys[:num_seeds], dataset)

    host = "host loop (paper-style), 1 seed"
    loops, seeds_of = {host: (host_loop, host_chunk)}, {host: 1}
    for precision in args.precision:
        for n in args.seeds:
            for chunk_size in chunk_sizes:
                name = loop_name(n, precision, chunk_size, len(args.precision) > 1, len(chunk_sizes) > 1)
                loops[name], seeds_of[name] = (scanned_loop(n, precision, chunk_size), chunk_size * n), n
    loops["matmul"] = matmul_loop(*(2 * [8192 if on_gpu else 2048]))
    loops["matmul at the update's shapes"] = matmul_loop(BATCH, max(hidden_dims))
    rates = interleaved_rates(loops, args.seconds)
    square = rates.pop("matmul") / 1e9  # GFLOP/s in each round
    shaped = rates.pop("matmul at the update's shapes") / 1e9
    # The reference is the faster matmul of each round: on a shared CPU the large square one, which leans on the L3
    # cache that neighbours share, can fall below the small one.
    matmul = np.maximum(square, shaped)
    host_rates = rates[host]
    rounds = len(square)
    width = max(hidden_dims)
    print(f"networks {'x'.join(map(str, hidden_dims))}; FLOPs per update (XLA cost analysis): {flops / 1e9:.2f} GFLOP")
    print(f"matmul here, median of {rounds} interleaved rounds: square {np.median(square):.0f} GFLOP/s (range "
          f"{square.min():.0f}-{square.max():.0f}); at the update's shapes ({BATCH}x{width} @ {width}x{width}) "
          f"{np.median(shaped):.0f} GFLOP/s ({shaped.min():.0f}-{shaped.max():.0f}); the faster of the two in each "
          f"round: {np.median(matmul):.0f} GFLOP/s")
    print(f"{'loop':48s} {'updates/s/seed':>15s} {'updates/s total':>16s} {'range':>13s} {'GFLOP/s':>9s} "
          f"{'of matmul':>10s} {'vs host':>8s} {'8x1M (h)':>9s}")
    rows = []
    for name, total in rates.items():
        per_seed = total / seeds_of[name]
        gflops = total * flops / 1e9
        hours = reproduce.training_hours(float(np.median(per_seed)), seeds_of[name])
        print(f"{name:48s} {np.median(per_seed):15.1f} {np.median(total):16.1f} {total.min():6.1f}-{total.max():<6.1f} "
              f"{np.median(gflops):9.1f} {np.median(gflops / matmul):9.0%} {np.median(total / host_rates):7.2f}x "
              f"{hours:9.2f}")
        rows.append((name, np.median(per_seed), np.median(total)))
    print("medians over rounds; 'of matmul' (of the faster matmul) and 'vs host' are medians of the ratios within each "
          "round; '8x1M (h)': predicted hours to train a paper-scale row (8 seeds x 1M updates: ceil(8 / seeds) "
          "programs), before evaluation and data")
    for precision in [p for p in args.precision if p != "float32"] if len(args.precision) > 1 else []:
        drift = loss_drift(states, keys, dataset, precision, args.compare_updates)
        print(f"losses after {args.compare_updates} updates, {precision} matmuls against float32: largest relative "
              f"difference {drift:.2e}")
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
