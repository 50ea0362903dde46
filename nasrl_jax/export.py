"""The exported-model format (interim: the io branch replaces this with Orbax-native restore)."""

import dataclasses
import os
from typing import Any

from flax import nnx

from nasrl_jax import checkpoint as ckpt_lib
from nasrl_jax import child as child_lib
from nasrl_jax import io_utils
from nasrl_jax import space as space_lib


def metadata(arch, spec, data_cfg, *, name, threshold, threshold_source, **extra) -> dict:
  meta = {"architecture": arch.to_json(), "spec": spec.to_json(),
          "preprocessing": {"image_size": int(data_cfg.image_size), "crop": data_cfg.crop,
                            "crop_box": list(data_cfg.crop_box),
                            "max_pixels": int(data_cfg.max_pixels),
                            "label_mode": data_cfg.label_mode,
                            "cap_cutoff": float(data_cfg.cap_cutoff),
                            "grade_cutoffs": list(data_cfg.grade_cutoffs)},
          "name": name, "threshold": float(threshold), "threshold_source": threshold_source}
  meta.update(io_utils.to_json_safe(extra))
  return meta


def _pure(tree):
  return tree.to_pure_dict() if hasattr(tree, "to_pure_dict") else tree


def save(directory, params, batch_stats, meta, *, process_local: bool = False) -> None:
  del process_local
  ckpt_lib.save_model(directory, {"params": _pure(params), "batch_stats": _pure(batch_stats)},
                      meta)


@dataclasses.dataclass(frozen=True)
class Exported:
  name: str
  directory: str
  arch: Any
  spec: Any
  graphdef: Any
  params: Any
  batch_stats: Any
  metadata: dict
  threshold: float


def load(directory) -> Exported:
  tree, meta = ckpt_lib.load_model(directory)
  arch = space_lib.Architecture.from_json(meta["architecture"])
  spec = child_lib.ChildSpec(**meta["spec"])
  graphdef, params, stats = child_lib.abstract_state(arch, spec)
  nnx.replace_by_pure_dict(params, tree["params"])
  nnx.replace_by_pure_dict(stats, tree.get("batch_stats", {}))
  return Exported(str(meta.get("name") or os.path.basename(os.fspath(directory))),
                  os.fspath(directory), arch, spec, graphdef, params, stats, meta,
                  float(meta.get("threshold", 0.5)))
