"""Exchanging results between the processes of a `jax.distributed` run, tolerant of arrival skew.

Processes reach an exchange at different times (one outer fold or child takes longer than
another): JAX's collectives on CPU (Gloo) give a late peer 30 s to join the context, so results
travel through the coordination service's key-value store instead, which waits as long as needed
(`timeout_hours`). Values are JSON, split into chunks the store carries comfortably.
"""

import json

import jax
import numpy as np

from nasrl_jax import io_utils

_CHUNK = 1 << 20  # Bytes per key-value entry.
TIMEOUT_HOURS = 24.0 * 7  # A peer may finish its folds a week later and still be waited for.


def coordination_client():
  """The `jax.distributed` coordination service's client, or None before/without initialize().

  The one private JAX import in the package: JAX (0.10) has no public handle on the client's
  key-value store (`jax.experimental.multihost_utils` offers only collectives, which give a late
  peer 30 s on CPU). Orbax reaches the store the same way. tests/test_io_utils.py checks this
  path still exists in the installed JAX; test_scaleout uses it across two processes.
  """
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


def allgather_json(obj, name: str, timeout_hours: float = TIMEOUT_HOURS) -> list:
  """Every process's `obj` (JSON-safe) on every process, in process order.

  `name` must be unique per exchange and the same on every process.
  """
  if jax.process_count() == 1:
    return [io_utils.to_json_safe(obj)]
  client = coordination_client()
  if client is None:  # Multi-process without a coordination client: JAX's collective.
    return _allgather_collective(obj)
  pid, n = jax.process_index(), jax.process_count()
  raw = json.dumps(io_utils.to_json_safe(obj)).encode()
  chunks = [raw[i:i + _CHUNK] for i in range(0, len(raw), _CHUNK)] or [b""]
  for k, chunk in enumerate(chunks):
    client.key_value_set_bytes(f"nasrl/{name}/{pid}/{k}", chunk)
  client.key_value_set(f"nasrl/{name}/{pid}/n", str(len(chunks)))
  timeout_ms = int(min(timeout_hours * 3600e3, 2**31 - 1))
  out = []
  for p in range(n):
    count = int(client.blocking_key_value_get(f"nasrl/{name}/{p}/n", timeout_ms))
    data = b"".join(client.blocking_key_value_get_bytes(f"nasrl/{name}/{p}/{k}", timeout_ms)
                    for k in range(count))
    out.append(json.loads(data.decode()))
  return out


def barrier(name: str, timeout_hours: float = TIMEOUT_HOURS) -> None:
  """Waits until every process got here (before a collective some may reach late)."""
  if jax.process_count() == 1:
    return
  client = coordination_client()
  if client is not None:
    client.wait_at_barrier(f"nasrl/{name}", int(min(timeout_hours * 3600e3, 2**31 - 1)))


def _allgather_collective(obj) -> list:
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  raw = np.frombuffer(json.dumps(io_utils.to_json_safe(obj)).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([raw.size], np.int64)))
  sizes = sizes.reshape(-1)
  buf = np.zeros(int(sizes.max()), np.uint8)
  buf[:raw.size] = raw
  parts = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(sizes), -1)
  return [json.loads(parts[p, :sizes[p]].tobytes()) for p in range(len(sizes))]
