"""Device-memory estimates of a child's training from shapes alone (`jax.eval_shape`): how many
splits one vmapped call can batch (`auto_chunk`). The compiled programs' own memory analysis
(`programs.memory_bytes`) is the measured counterpart the pre-flight uses."""

from typing import Optional

import jax
import numpy as np

from nasrl_jax import child as child_lib


def auto_chunk(arch, spec, recipe, sizes, budget_bytes: Optional[int] = None,
               max_chunk: int = 16) -> int:
  """Members per vmapped call that fit a memory budget, from `jax.eval_shape` sizes.

  Per member: the train state (weights, Adam moments, kept weights) plus the activations of one
  minibatch kept for the backward pass (conv outputs before and after batch norm and ReLU).
  Budget: half of the device's free memory (GPU `memory_stats`), else 4 GiB.
  """
  per = member_bytes(arch, spec, recipe.batch_size)
  if budget_bytes is None:
    budget_bytes = 4 << 30
    try:
      stats = jax.devices()[0].memory_stats() or {}
      if "bytes_limit" in stats:
        budget_bytes = (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 2
    except Exception:  # pylint: disable=broad-except
      pass
  return int(max(1, min(max_chunk, budget_bytes // max(per, 1))))


def member_bytes(arch, spec, batch_size: int) -> int:
  """Estimated device bytes of one training run: state (x5 weights) + one batch's activations."""
  _, params, stats = child_lib.abstract_state(arch, spec)
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  n_stats = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(stats))
  state = 4 * (5 * n_params + 2 * n_stats)  # params, 2 Adam moments, kept params, grads.
  act = child_lib.activation_elements(arch, spec) * batch_size
  itemsize = 2 if spec.dtype == "bfloat16" else 4
  return int(state + 3 * act * itemsize)
