"""Offline RL agents, one module each, all with the protocol of ``fqlcore.agents.base``."""
import importlib

AGENTS = ("fql", "bc", "iql", "rebrac", "fawac", "fbrac", "ifql")


def get(name: str):
    """The agent module called ``name`` (e.g. ``"fql"``)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}: expected one of {', '.join(AGENTS)}")
    return importlib.import_module(f"fqlcore.agents.{name}")
