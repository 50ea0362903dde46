"""The training recipe: the static setup a child's programs depend on besides architecture and
spec (epochs, batch sizes, optimizer and schedule, balancing and augmentation, the validation rules),
read from the config once per run and part of every program's cache key."""

import dataclasses

import optax

BALANCED_SAMPLING = "upright_sample"  # data.balance mode that samples rows instead of permuting.
VAL_WEIGHTINGS = ("none", "class")  # config.train.val_weighting.


def make_optimizer(train_cfg, total_steps: int, steps_per_epoch: int):
  c = train_cfg
  warmup = min(int(c.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
  sched = optax.warmup_cosine_decay_schedule(0.0, float(c.learning_rate), warmup,
                                             max(total_steps, 1))
  if c.optimizer == "adam":
    if c.weight_decay > 0:
      return optax.adamw(sched, weight_decay=float(c.weight_decay))
    return optax.adam(sched)
  if c.optimizer == "sgd":
    return optax.chain(optax.add_decayed_weights(float(c.weight_decay)),
                       optax.sgd(sched, momentum=0.9, nesterov=True))
  raise ValueError(f"train.optimizer={c.optimizer!r}: use adam or sgd")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The static training setup a program depends on besides architecture and spec."""
  epochs: int
  batch_size: int
  eval_batch_size: int
  optimizer: str
  learning_rate: float
  warmup_epochs: float
  weight_decay: float
  rotations: bool  # rot90 balancing copies in the splits.
  sampling: str  # permute | balanced
  hflip: bool
  gain: float  # Multiplicative gain jitter half-width (0 = off).
  cpu_opt_level: int  # XLA:CPU backend optimisation level of child programs (-1 = XLA's default).
  min_epochs: int = 0  # Weights of epochs before this one are never kept (0 = any epoch).
  val_weighting: str = "none"  # none | class: the validation NLL weighted per class like the
  #                              training loss (the split's class weights).
  cpu_fusion_emitters: bool = True  # False: XLA:CPU's older elemental emitters (faster compiles).

  @classmethod
  def from_config(cls, config) -> "Recipe":
    t, d = config.train, config.data
    augment = tuple(d.augment)
    unknown = sorted(set(augment) - {"hflip", "gain"})
    if unknown:
      raise ValueError(f"config.data.augment has unknown entries {unknown}; use hflip, gain")
    if t.val_weighting not in VAL_WEIGHTINGS:
      raise ValueError(f"config.train.val_weighting={t.val_weighting!r}: use "
                       f"{' or '.join(VAL_WEIGHTINGS)}")
    if isinstance(t.min_epochs, bool) or not 0 <= int(t.min_epochs) < int(t.epochs):
      raise ValueError(f"config.train.min_epochs={t.min_epochs!r}: must be an integer in "
                       f"[0, train.epochs)")
    return cls(int(t.epochs), int(t.batch_size), int(t.eval_batch_size), str(t.optimizer),
               float(t.learning_rate), float(t.warmup_epochs), float(t.weight_decay),
               d.balance == "rot90", "balanced" if d.balance == BALANCED_SAMPLING else "permute",
               "hflip" in augment, float(d.gain_jitter) if "gain" in augment else 0.0,
               int(t.cpu_opt_level), int(t.min_epochs), str(t.val_weighting),
               bool(t.cpu_fusion_emitters))
