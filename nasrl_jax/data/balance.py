"""Class balancing of a training part by rot90 copies (the paper's only augmentation).

The paper balances the classes by adding copies of minority-class images rotated by multiples of
90 degrees. Here balancing works on *indices* so the images can stay resident on the accelerator:
`balance_indices` returns (image index, quarter turns) pairs; the training loop gathers and rotates
on device with `rotate_batch` (jittable), or on the host with `apply_rotations`.

Rules:
  * only the training indices passed in are used: validation and test images are never copied;
  * every class is topped up to the largest class of the training part (binary: the minority
    class up to the majority);
  * each original gets at most 3 rotated copies (90, 180, 270 degrees; 0 would be a duplicate), so
    a class with fewer than a quarter of the largest class's images stays short -- balancing is
    then partial, not an error;
  * copies are spread evenly: every original of a class gets one copy before any gets a second,
    and an original's copies have distinct rotations. Which originals and rotations are chosen is
    a deterministic function of `seed` (np.random.default_rng).
"""

import jax.numpy as jnp
import numpy as np

MAX_COPIES = 3  # Rotations by 90, 180 and 270 degrees; a 0-degree copy would be a plain duplicate.


def balance_indices(indices, labels, seed):
  """Tops up every class of a training part to the largest one with rot90 copies.

  Args:
    indices: [n] training image indices into the dataset (distinct).
    labels: [N] integer labels of the whole dataset.
    seed: seed of the np.random.default_rng that picks the originals and rotations.

  Returns:
    (idx, rot): int32[M] image indices and int32[M] quarter turns (k in np.rot90). The first n
    entries are `indices` in the given order with rot 0; the added copies follow, class by class
    in ascending label order, with rot in {1, 2, 3}.

  Raises:
    ValueError: indices not 1-D integers, out of range or repeated (a caller bug, not user input).
  """
  indices = np.asarray(indices)
  labels = np.asarray(labels)
  if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
    raise ValueError(f"balance_indices: indices must be a 1-D integer array, got {indices.dtype}"
                     f"{list(indices.shape)}")
  if labels.ndim != 1:
    raise ValueError(f"balance_indices: labels must be 1-D, got shape {labels.shape}")
  if indices.size and (indices.min() < 0 or indices.max() >= labels.size):
    raise ValueError(f"balance_indices: an index is outside [0, {labels.size})")
  if np.unique(indices).size != indices.size:
    raise ValueError("balance_indices: indices contain duplicates")
  rng = np.random.default_rng(seed)
  train_labels = labels[indices]
  classes, counts = np.unique(train_labels, return_counts=True)
  target = counts.max() if counts.size else 0
  extra_idx, extra_rot = [], []
  for c, count in zip(classes, counts):
    need = min(int(target - count), MAX_COPIES * int(count))
    if need <= 0:
      continue
    originals = indices[train_labels == c]
    # Round r gives the r-th (distinct) rotation of every original, originals in a random order,
    # so copies are spread as evenly as possible across originals and rotations.
    order = rng.permutation(originals.size)
    rots = np.argsort(rng.random((originals.size, MAX_COPIES)), axis=1) + 1
    cand_idx = np.tile(originals[order], MAX_COPIES)
    cand_rot = rots[order].T.reshape(-1)
    extra_idx.append(cand_idx[:need])
    extra_rot.append(cand_rot[:need])
  idx = np.concatenate([indices.astype(np.int64)] + extra_idx).astype(np.int32)
  rot = np.concatenate([np.zeros(indices.size, np.int64)] + extra_rot).astype(np.int32)
  return idx, rot


def class_counts(idx, labels):
  """{label: count} of the images `idx` points at (for logs and the report's data section)."""
  values, counts = np.unique(np.asarray(labels)[np.asarray(idx)], return_counts=True)
  return {int(v): int(c) for v, c in zip(values, counts)}


def apply_rotations(images, idx, rot):
  """Gathers images and rotates each by its quarter turns, on the host.

  Args:
    images: [N, H, W, C] numpy array.
    idx: [M] image indices (from balance_indices).
    rot: [M] quarter turns in {0, 1, 2, 3} (np.rot90's k over axes (1, 2)).

  Returns:
    [M, H, W, C] array, same dtype as images.

  Raises:
    ValueError: bad shapes, rot outside 0..3, or odd turns of non-square images.
  """
  images = np.asarray(images)
  idx = np.asarray(idx)
  rot = np.asarray(rot)
  if images.ndim != 4:
    raise ValueError(f"apply_rotations: images must be [N, H, W, C], got shape {images.shape}")
  if idx.shape != rot.shape or idx.ndim != 1:
    raise ValueError(f"apply_rotations: idx {idx.shape} and rot {rot.shape} must be equal 1-D")
  if rot.size and (rot.min() < 0 or rot.max() > MAX_COPIES):
    raise ValueError("apply_rotations: rot must be in {0, 1, 2, 3}")
  if images.shape[1] != images.shape[2] and np.any(rot % 2 == 1):
    raise ValueError(
        f"apply_rotations: 90/270-degree turns of non-square images {images.shape[1:3]} "
        "would change their shape")
  out = images[idx]
  for k in range(1, MAX_COPIES + 1):
    sel = rot == k
    if np.any(sel):
      out[sel] = np.rot90(out[sel], k, axes=(1, 2))
  return out


def rotate_batch(images, rot):
  """Rotates each image of a square batch by its quarter turns; jittable (jax.numpy).

  All four rotations are computed and one is selected per example: for the small grayscale
  batches of this project a transpose/flip is far cheaper than a data-dependent gather or a
  per-example switch, and the shapes stay static.

  Args:
    images: [B, H, H, C] array (jax or numpy); must be square.
    rot: [B] integer quarter turns in {0, 1, 2, 3}.

  Returns:
    [B, H, H, C] jax array, equal to apply_rotations(images, arange(B), rot).
  """
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"rotate_batch: images must be square [B, H, H, C], got {images.shape}")
  images = jnp.asarray(images)
  r = jnp.asarray(rot).reshape(-1, 1, 1, 1)
  return jnp.select(
      [r == 1, r == 2, r == 3],
      [jnp.rot90(images, k, axes=(1, 2)) for k in (1, 2, 3)],
      images)
