"""nasrl_jax: Neural Architecture Search with RL for early fatty-liver detection (JAX/Flax)."""

__version__ = "0.1.0"
