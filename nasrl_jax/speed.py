"""Inference speed of a model on this run's device: batch-1 FPS and large-batch throughput."""

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from nasrl_jax import child as child_lib


def inference_speed(arch, spec: child_lib.ChildSpec, weights=None, *, iters=100,
                    throughput_batch=64, seed=0) -> dict:
  """FPS at batch 1 (median latency of warm, jitted, synchronised calls) and large-batch throughput.

  Args:
    arch, spec: the model.
    weights: (params, batch_stats) on device, or None for freshly initialised weights (speed does
      not depend on the values).
    iters: timed batch-1 calls.
    throughput_batch: batch size of the throughput figure.

  Returns:
    {"fps": 1 / median latency, "latency_ms_median", "latency_ms_p90", "throughput",
     "throughput_batch", "device"}.
  """
  graphdef, _, _ = child_lib.abstract_state(arch, spec)
  if weights is None:
    _, params, stats = child_lib.init(arch, spec, seed)
    params, stats = jax.device_put((params, stats))
  else:
    params, stats = weights

  @jax.jit
  def predict(params, stats, x):
    logits, _ = child_lib.apply(graphdef, params, stats, x, train=False)
    return jax.nn.softmax(logits)

  def timed(batch, n):
    x = jnp.zeros((batch,) + tuple(spec.input_shape), jnp.uint8)
    predict(params, stats, x).block_until_ready()  # Compile + warm up.
    predict(params, stats, x).block_until_ready()
    out = []
    for _ in range(n):
      t0 = time.perf_counter()
      predict(params, stats, x).block_until_ready()
      out.append(time.perf_counter() - t0)
    return out

  lat = timed(1, max(int(iters), 3))
  big = timed(int(throughput_batch), max(3, int(iters) // 10))
  med = statistics.median(lat)
  return {"fps": 1.0 / med, "latency_ms_median": 1e3 * med,
          "latency_ms_p90": 1e3 * float(np.percentile(lat, 90)),
          "throughput": int(throughput_batch) / statistics.median(big),
          "throughput_batch": int(throughput_batch), "device": describe_device()}


def describe_device() -> str:
  """E.g. 'NVIDIA H100 80GB HBM3 (gpu)' or 'cpu (2 cores)'."""
  d = jax.devices()[0]
  if d.platform == "cpu":
    return f"cpu ({os.cpu_count()} cores)"
  return f"{getattr(d, 'device_kind', d.platform)} ({d.platform})"
