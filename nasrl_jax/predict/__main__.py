"""`python -m nasrl_jax.predict`: see `nasrl_jax.predict.cli`."""

from nasrl_jax.predict import cli

if __name__ == "__main__":
  cli.run()
