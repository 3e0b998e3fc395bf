"""jaxticket: lottery tickets and pruning research in JAX/Flax."""

__version__ = "0.1.0"
