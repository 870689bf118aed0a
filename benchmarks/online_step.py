"""What one online fine-tuning step costs with the paper's 2M-row replay buffer: as one jitted call (write, sample,
update, act) against fqlcore's two (the donated write, then the rest), and whether both end with the same parameters.

In one call, XLA on a CPU copies buffer-sized arrays every step; in two, the write updates the buffer in place
(``tests/test_online.py`` checks that fqlcore's two compiled programs contain no buffer-sized copy). Timings are shown, never asserted.
Runs unchanged on CPU or GPU:  python benchmarks/online_step.py [--rows 2000000] [--steps 100] [--hidden 16,16]
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from fqlcore import data, online, provenance
from fqlcore.agents import fql

OBS, ACT, OFFLINE_ROWS, BATCH = 29, 8, 1000, 256  # an AntMaze-sized observation and action


def offline_dataset() -> data.Dataset:
    rng = np.random.default_rng(0)
    return data.from_arrays(observations=rng.normal(size=(OFFLINE_ROWS, OBS)).astype(np.float32),
                            actions=rng.uniform(-1, 1, (OFFLINE_ROWS, ACT)).astype(np.float32),
                            rewards=np.zeros(OFFLINE_ROWS, np.float32),
                            next_observations=rng.normal(size=(OFFLINE_ROWS, OBS)).astype(np.float32),
                            masks=np.ones(OFFLINE_ROWS, np.float32), terminals=np.zeros(OFFLINE_ROWS, np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=online.BUFFER_SIZE, help="replay buffer rows (the paper's 2M)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per variant")
    parser.add_argument("--hidden", default="16,16", help="hidden layer widths, comma-separated")
    args = parser.parse_args()
    if args.rows <= OFFLINE_ROWS or args.steps < 1:
        raise SystemExit(f"--rows must exceed {OFFLINE_ROWS} and --steps be at least 1, got {args.rows} and "
                         f"{args.steps}")
    dataset = offline_dataset()
    config = fql.Config(hidden_dims=tuple(int(h) for h in args.hidden.split(",")))
    start_state = fql.init(jax.random.PRNGKey(0), data.sample(dataset, jax.random.PRNGKey(1), BATCH), config)
    transition = {"observations": np.ones(OBS, np.float32), "actions": np.zeros(ACT, np.float32),
                  "rewards": np.float32(1), "next_observations": np.ones(OBS, np.float32),
                  "masks": np.float32(1), "terminals": np.float32(0)}
    next_obs = np.zeros(OBS, np.float32)
    one_call = jax.jit(online.make_step(fql, BATCH), donate_argnums=(1,))
    _, write, learn = online._jitted(fql, BATCH)

    def two_calls(state, buf, key):
        buf = write(buf, transition)
        state, key, _, _ = learn(state, buf, key, next_obs)
        return state, buf, key

    variants = {"one jitted call": lambda s, b, k: one_call(s, b, k, transition, next_obs)[:3],
                "two jitted calls (fqlcore)": two_calls}
    print(f"{provenance.device()}; buffer of {args.rows:,} rows, {args.hidden} MLPs, batch {BATCH}")
    final = {}
    for name, step in variants.items():
        state, buf, key = start_state, online.buffer(dataset, args.rows), jax.random.PRNGKey(2)
        for _ in range(3):  # compiles
            state, buf, key = step(state, buf, key)
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(args.steps):
            state, buf, key = step(state, buf, key)
        jax.block_until_ready(state)
        print(f"{name:28s} {(time.perf_counter() - start) / args.steps * 1e3:8.2f} ms a step")
        final[name] = state.params
    same = all(np.array_equal(a, b) for a, b in zip(*(jax.tree.leaves(p) for p in final.values())))
    print("same parameters after", args.steps + 3, "steps:", same)


if __name__ == "__main__":
    main()
