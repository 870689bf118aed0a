"""fqlcore: a small, fast JAX library for Flow Q-Learning and the book that teaches it."""
__version__ = "0.1.0"
