"""The pre-specified primary endpoint: `config.eval.primary`, parsed and checked before any work.

`config.eval.primary` is a tuple of "A vs B" comparisons and one metric name, e.g.
("NASRL vs VGG19", "NASRL vs RandomSearch", "subject.auroc"). The metric is `[level.]name` with
level `image` or `subject` (default subject) and name one of METRICS. Only this family carries the
report's verdict and Holm's adjustment; every other comparison is exploratory.
"""

import dataclasses

from nasrl_jax.errors import UserInputError

# Metrics a primary endpoint can name: each has a value per test training at both levels.
METRICS = ("auroc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv",
           "brier")
LEVELS = ("subject", "image")
# Metrics computed at each fold's validation threshold (the rest: threshold-free, or Table 1's 0.5).
AT_VALIDATION_THRESHOLD = ("balanced_accuracy", "ppv", "npv")
SEPARATOR = " vs "
# The default family (configs/fatty_liver.py sets the same): results written without a spec use it.
DEFAULT = ("NASRL vs VGG19", "NASRL vs RandomSearch", "subject.auroc")


@dataclasses.dataclass(frozen=True)
class Primary:
  comparisons: tuple  # ((a, b), ...)
  metric: str  # One of METRICS.
  level: str  # One of LEVELS.

  def to_json(self) -> dict:
    return {"metric": self.metric, "level": self.level,
            "comparisons": [f"{a}{SEPARATOR}{b}" for a, b in self.comparisons]}


def parse(spec, model_names=None) -> Primary:
  """`config.eval.primary` -> Primary.

  Args:
    spec: the tuple of "A vs B" strings and one metric name.
    model_names: names a comparison may use besides VGG19 (the strategies' model names); None
      skips that check (a report of a finished run reads the names it has).

  Raises:
    UserInputError: one line naming what is wrong.
  """
  where = f"config.eval.primary={tuple(spec) if not isinstance(spec, str) else spec!r}"
  if isinstance(spec, str) or not spec:
    raise UserInputError(f"{where}: give a tuple of 'A vs B' comparisons and one metric name, "
                         "e.g. ('NASRL vs VGG19', 'NASRL vs RandomSearch', 'subject.auroc')")
  pairs, metrics = [], []
  for item in spec:
    text = str(item).strip()
    if SEPARATOR in text:
      a, b = (x.strip() for x in text.split(SEPARATOR, 1))
      if not a or not b or a == b:
        raise UserInputError(f"{where}: {text!r} must compare two different models")
      pairs.append((a, b))
    else:
      metrics.append(text)
  if len(metrics) != 1 or not pairs:
    raise UserInputError(f"{where}: needs at least one 'A vs B' comparison and exactly one metric "
                         f"name (got metrics {metrics})")
  level, _, name = metrics[0].rpartition(".")
  level = level or "subject"
  if level not in LEVELS or name not in METRICS:
    raise UserInputError(f"{where}: metric {metrics[0]!r} must be [image.|subject.]name with name "
                         f"one of {', '.join(METRICS)}")
  if model_names is not None:
    known = {"VGG19"} | set(model_names)
    unknown = sorted({m for pair in pairs for m in pair} - known)
    if unknown:
      raise UserInputError(f"{where}: unknown model(s) {unknown}; the models are "
                           f"{', '.join(sorted(known))}")
  if len(set(pairs)) != len(pairs):
    raise UserInputError(f"{where}: a comparison is listed twice")
  return Primary(tuple(pairs), name, level)
