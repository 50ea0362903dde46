"""The embedded default dataset: a physically grounded B-mode liver ultrasound simulator.

The `synthetic` source of `nasrl_jax.data.load`; the recipe and every range come from
/work/shared/ULTRASOUND_PHYSICS.md (the paper's clinical data is private). One concept per module:

  spec     constants (`Physics`, machine `PROFILES`), `SIMULATOR_VERSION`, random streams,
           `validate` of config.data.synthetic
  cohort   subjects, measured and true CAP, per-subject tissue properties (smooth functions of
           the true CAP), per-image scan settings and anatomy layout: every random draw but speckle
  physics  the signal chain on the beam grid: scatterers, PSF, attenuation, noise, TGC,
           the operator's re-centring
  render   anatomy on the beam grid, dB -> grey, scan conversion, fan geometry, tint/text/JPEG,
           and `simulate` (the whole cohort, in threads)
  cache    cache key, npz cache (`simulate_cached`), and `load(data_cfg) -> Dataset`

Everything is deterministic from `synth_cfg.seed`: every image draws from its own
`SeedSequence([seed, stream, index])`, so results do not depend on chunking or threads.
"""

from nasrl_jax.data.synthetic.cache import cache_dir_of
from nasrl_jax.data.synthetic.cache import cache_key
from nasrl_jax.data.synthetic.cache import load
from nasrl_jax.data.synthetic.cache import simulate_cached
from nasrl_jax.data.synthetic.cohort import sample_cohort
from nasrl_jax.data.synthetic.render import fan_mask
from nasrl_jax.data.synthetic.render import simulate
from nasrl_jax.data.synthetic.spec import DEVICE_NAMES
from nasrl_jax.data.synthetic.spec import PHYSICS
from nasrl_jax.data.synthetic.spec import PROFILES
from nasrl_jax.data.synthetic.spec import S0_CUTOFF
from nasrl_jax.data.synthetic.spec import SIMULATOR_VERSION
from nasrl_jax.data.synthetic.spec import MachineProfile
from nasrl_jax.data.synthetic.spec import Physics
from nasrl_jax.data.synthetic.spec import validate

__all__ = [
    "DEVICE_NAMES", "MachineProfile", "PHYSICS", "PROFILES", "Physics", "S0_CUTOFF",
    "SIMULATOR_VERSION", "cache_dir_of", "cache_key", "fan_mask", "load", "sample_cohort",
    "simulate", "simulate_cached", "validate",
]
