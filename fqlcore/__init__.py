"""fqlcore: a small, fast JAX library for Flow Q-Learning and the book that teaches it.

``import fqlcore`` makes the core modules available as attributes (``fqlcore.scale.current()``, ``fqlcore.flow``, ...);
the benchmark environments (``fqlcore.envs``) and ``fqlcore.evaluate`` are imported on demand.
"""
from fqlcore import agents, configs, data, flow, nets, scale, toy, train  # noqa: F401

__version__ = "0.1.0"
