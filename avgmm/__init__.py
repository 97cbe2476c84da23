"""avgmm: GMM-guided adaptive loss for balanced audio-visual learning in JAX/Flax."""

__version__ = "0.1.0"
