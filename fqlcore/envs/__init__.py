"""Benchmarks: environments and their offline datasets, converted to ``fqlcore.data.Dataset``.

- ``fqlcore.envs.ogbench``: OGBench singletask datasets (published, or regenerated with OGBench's own scripted oracles
  where there is no network) and evaluation environments with the paper's ``success_timing="post"``.

Submodules import their benchmark packages (ogbench, mujoco, gymnasium) lazily, so ``import fqlcore.envs`` is cheap.
"""
