"""report.md's clinical sections: the metrics at each training's validation threshold, the
validation thresholds, probability quality (Brier, calibration), sensitivity by grade and the
degenerate trainings. Reads only the JSON-safe report object, as `markdown` does."""

from nasrl_jax.report.text import (METRIC_TITLES, fmt, not_estimable_notes, stat_text, table)

CLINICAL_COLUMNS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv")


def clinical_section(report):
  lines = ["## Clinical metrics at the validation threshold", "",
           "Each test training's threshold on P(fatty) was chosen on its own validation part "
           "(Youden's J), never on test data: the operating point an exported model uses. "
           "Prevalence and the no-information rate (the accuracy of always calling the majority "
           "class) are the test parts'; accuracy means little unless it clears the latter.", ""]
  for level in ("image", "subject"):
    rows, notes = [], []
    for m in report["models"]:
      block = m if level == "image" else m["subject"]
      at = block["at_val_threshold"]
      rows.append([m["name"], fmt(block["prevalence"]["mean"]),
                   fmt(block["no_information_rate"]["mean"])] +
                  [stat_text(at[n], std=False) for n in CLINICAL_COLUMNS])
      notes += [(f"{m['name']} {METRIC_TITLES[n]}", at[n]) for n in CLINICAL_COLUMNS]
    lines += [f"{level.capitalize()} level:", "",
              table(["Model", "prevalence", "no-information rate"] +
                    [METRIC_TITLES[n] for n in CLINICAL_COLUMNS], rows), ""]
    lines += not_estimable_notes(notes) + [""]
  rows = [[m["name"], fmt(m["thresholds"]["mean"]), fmt(m["thresholds"].get("sd")),
           f"[{fmt(m['thresholds']['min'])}, {fmt(m['thresholds']['max'])}]",
           m["thresholds"]["n"]] for m in report["models"]]
  lines += ["Validation thresholds over the test trainings:", "",
            table(["Model", "mean", "sd", "range", "trainings"], rows), ""]
  return lines + calibration_lines(report) + grade_sensitivity_lines(report)


def calibration_lines(report):
  rows, notes = [], []
  for m in report["models"]:
    for level, block in (("image", m), ("subject", m["subject"])):
      cal = block["calibration"]
      rows.append([m["name"], level, stat_text(block["brier"], std=False, digits=3),
                   stat_text(cal["intercept"], std=False), stat_text(cal["slope"], std=False)])
      notes += [(f"{m['name']} {level} {k}", v) for k, v in
                (("Brier", block["brier"]), ("intercept", cal["intercept"]),
                 ("slope", cal["slope"]))]
  return (["### Probability quality", "",
           "Brier score (0 is perfect; always predicting the prevalence scores prev x (1 - prev)); "
           "calibration intercept (calibration in the large: 0 is ideal, > 0 means predicted "
           "risks too low) and slope (1 is ideal, < 1 means predictions too extreme) from a "
           "logistic recalibration of each training's predictions. See plots/calibration.png and "
           "plots/decision_curve.png.", "",
           table(["Model", "level", "Brier", "calibration intercept", "calibration slope"], rows),
           ""] + not_estimable_notes(notes) + [""])


def grade_sensitivity_lines(report):
  models = [m for m in report["models"] if m.get("sensitivity_by_grade")]
  if not models:
    return []
  rows, notes = [], []
  for m in models:
    g = m["sensitivity_by_grade"]
    rows.append([m["name"]] + [stat_text(g[k], std=False) for k in g])
    notes += [(f"{m['name']} {k}", v) for k, v in g.items()]
  return (["### Sensitivity by grade (early detection)", "",
           "Sensitivity at the validation threshold among fatty images whose CAP places them in "
           "S1 (early: cap cut-off to the S2 cut-off) or S2-S3: the paper's question is early "
           "detection.", "",
           table(["Model"] + list(models[0]["sensitivity_by_grade"]), rows), ""] +
          not_estimable_notes(notes) + [""])


def degenerate_section(report):
  lines = ["## Degenerate trainings", "",
           "A test training is degenerate (near-constant) when the interquartile range of its "
           "test P(fatty) is below 0.05 or its validation threshold calls >= 95 % of its test "
           "images one class (`metrics.degenerate`). \"Learned\" requires none.", ""]
  rows = [[m["name"], d["fold"], "n/a" if d.get("seed") is None else d["seed"],
           d["training_seed"], d["reason"]] for m in report["models"]
          for d in m.get("degenerate") or []]
  counts = ", ".join(f"{m['name']} {m.get('degenerate_trainings', 0)} of {m.get('trainings')}"
                     for m in report["models"])
  lines.append(f"Degenerate test trainings: {counts}.")
  if rows:
    lines += ["", table(["Model", "outer fold", "search seed", "training seed", "why"], rows)]
  return lines + [""]
