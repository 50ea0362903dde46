"""The model side of prediction: P(fatty liver) per image and Grad-CAM saliency, in one jitted call.

This module owns `make_predict_fn` (probability, and optionally the Grad-CAM map of the decision)
and `overlay` (the map blended over the image the model saw). matplotlib is imported only when an
overlay is drawn.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nasrl_jax import child as child_lib

SALIENCY_ALPHA = 0.6  # Opacity of the heat map where the Grad-CAM map is at its maximum.
SALIENCY_CMAP = "jet"  # Matplotlib colormap of the heat map (blue = low, red = high).


def features(model: child_lib.ChildNet, x: jax.Array) -> jax.Array:
  """The last conv layer's activations (before the last pool), eval mode."""
  return model.features(x, train=False)


def head(model: child_lib.ChildNet, a: jax.Array) -> jax.Array:
  """The rest of the network in eval mode: logits [B, classes]."""
  return model.head_logits(a, train=False)


def fatty_log_odds(logits: jax.Array) -> jax.Array:
  """log P(fatty) - log P(S0) from logits [B, classes]: logit_1 - logit_0 in binary mode."""
  return jax.nn.logsumexp(logits[:, 1:], axis=-1) - logits[:, 0]


def make_predict_fn(graphdef, saliency: bool) -> Callable:
  """Jitted `fn(params, batch_stats, x uint8[B, S, S, 1]) -> (prob [B], cam [B, S, S] | None)`.

  `prob` is P(fatty) = sigmoid(fatty log-odds) = 1 - softmax(logits)[0].

  With `saliency`, `cam` is Grad-CAM (Selvaraju et al. 2017) for the fatty log-odds: the last conv
  layer's activations A_k weighted by the spatial mean of d(log-odds)/dA_k, summed over channels,
  ReLU, bilinearly upsampled to the input size and divided by its per-image maximum (all zeros when
  nothing in the image argues for fatty). The log-odds, not logit_1 alone, is the quantity the
  decision depends on. Batch norm is in eval mode, so images in a batch do not interact and one
  vector-Jacobian product gives every image's gradient.
  """

  def predict(params, batch_stats, x):
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    a = features(model, x)
    if not saliency:
      return jax.nn.sigmoid(fatty_log_odds(head(model, a))), None
    score, vjp = jax.vjp(lambda a_: fatty_log_odds(head(model, a_)), a)
    (grad,) = vjp(jnp.ones_like(score))
    a32, g32 = a.astype(jnp.float32), grad.astype(jnp.float32)
    weights = g32.mean(axis=(1, 2), keepdims=True)
    cam = jax.nn.relu((weights * a32).sum(axis=-1))
    cam = jax.image.resize(cam, (x.shape[0], x.shape[1], x.shape[2]), "bilinear")
    cam = jnp.maximum(cam, 0.0)  # Bilinear interpolation of non-negative values stays >= 0.
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
    return jax.nn.sigmoid(score), cam

  return jax.jit(predict)


def overlay(gray: np.ndarray, cam: np.ndarray) -> np.ndarray:
  """The preprocessed image with a colour heat map blended in where the map is high.

  Args:
    gray: uint8[S, S] (what the model saw).
    cam: float[S, S] in [0, 1].

  Returns:
    uint8[S, S, 3]: gray where cam is 0; up to SALIENCY_ALPHA of the colormap where cam is 1.
  """
  # Imported here: matplotlib takes a second to import and only overlays need it.
  import matplotlib  # pylint: disable=g-import-not-at-top
  cam = np.clip(np.asarray(cam, np.float64), 0.0, 1.0)
  color = matplotlib.colormaps[SALIENCY_CMAP](cam)[..., :3]
  base = (np.asarray(gray, np.float64) / 255.0)[..., None]
  w = SALIENCY_ALPHA * cam[..., None]
  return np.clip(np.rint(((1.0 - w) * base + w * color) * 255.0), 0, 255).astype(np.uint8)
