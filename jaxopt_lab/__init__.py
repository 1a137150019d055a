"""jaxopt_lab: optimizer and LLM-training experiments in JAX."""

__version__ = "0.1.0"
