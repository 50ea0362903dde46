"""The model card beside every exported model: `W/models/<name>/model_card.md` and its fields.

Written from the run's own records, never by hand: the report object (what report.json holds:
cohort, data, flow, the procedure's estimate with its intervals, versions) and the export's
metadata (which training it is, its architecture, preprocessing and threshold). The same fields
go into the export's JSON metadata under `model_card`, so a program reads what a person reads.

The card keeps two things apart that are easy to mix up: this exported model's own test metrics
(one training of one outer fold, on that fold's test part) and the procedure's estimate (the
mean over outer folds and test trainings, with the interval of the report), which is what a
methods section cites.
"""

import os

from nasrl_jax import checkpoint
from nasrl_jax import io_utils
from nasrl_jax.report.text import fmt, int_text, flops_text

CARD = "model_card.md"
ESTIMATE_METRICS = ("auroc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv",
                    "npv")
TITLES = {"auroc": "AUROC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
          "sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV", "npv": "NPV"}
SOURCES = {"best_validation_outer_fold": "the test training with the best validation score over "
                                         "all outer folds and training seeds (chosen without "
                                         "test data)",
           "final_search": "the final search's model: a search on all subjects, trained once "
                           "(no test part exists for it)",
           "search_fold": "a training of the paper protocol's searched fold"}


def _metric(stat):
  """A report metric object -> {"mean", "ci95", "covers", "estimable", "reason"}."""
  return {"mean": stat.get("mean"), "ci95": stat.get("ci95"), "covers": stat.get("ci_covers"),
          "estimable": stat.get("estimable"), "reason": stat.get("reason")}


def _own_metrics(entry, meta):
  """The exported training's own test metrics (image and subject level), if it has a test part."""
  for f in entry.get("folds") or []:
    if (f.get("fold"), f.get("seed"), f.get("training_seed")) == (
        meta.get("fold"), meta.get("seed"), meta.get("training_seed")):
      m = f.get("metrics") or {}
      keep = lambda d: {k: d.get(k) for k in ("auroc", "accuracy", "sensitivity", "specificity",
                                              "val_sensitivity", "val_specificity", "brier")}
      return {"fold": f["fold"], "n_test": f.get("n_test"), "image": keep(m.get("image") or {}),
              "subject": keep(m.get("subject") or {})}
  return None


def fields(report: dict, entry: dict, meta: dict) -> dict:
  """The card's fields for one model (plain JSON)."""
  data, cohort = report.get("data") or {}, report.get("cohort") or {}
  simulated = cohort.get("source") == "synthetic"
  subject = entry.get("subject") or {}
  at_val = subject.get("at_val_threshold") or {}
  estimate = {"level": "subject", "outer_folds": data.get("outer_folds"),
              "test_trainings": entry.get("trainings"), "protocol": report.get("protocol")}
  estimate.update({k: _metric(subject["auroc"] if k == "auroc" else at_val[k])
                   for k in ESTIMATE_METRICS if k == "auroc" or k in at_val})
  limits = [f"Budget of this run: config variant `{report.get('config_variant') or 'default'}` "
            f"({data.get('image_shape')} images, {data.get('outer_folds')} outer folds)."]
  if simulated:
    limits.append("Trained and evaluated on SIMULATED images (the embedded B-mode simulator): it "
                  "says nothing about performance on real patients.")
  if cohort.get("tuned_on_it"):
    limits.append("The cohort is a tuning cohort: recipes were chosen on it.")
  degenerate = entry.get("degenerate_trainings") or 0
  if degenerate:
    limits.append(f"{degenerate} of {entry.get('trainings')} test trainings of this procedure were "
                  "near-constant predictors.")
  for g in entry.get("per_group") or []:
    limits.append(f"Held-out machine/site {g['group']}: AUROC {fmt(g['auroc']['value'])} "
                  f"(accuracy {fmt(g['accuracy']['value'])}).")
  prep = meta.get("preprocessing") or {}
  return {
      "model": entry["name"],
      "intended_use": "Research use only: detection of fatty liver (CAP >= cut-off) on B-mode "
                      "liver ultrasound, to compare architectures and reproduce the study. Not a "
                      "medical device; not for diagnosis or treatment decisions.",
      "simulated_training_data": simulated,
      "population": {"source": data.get("name"), "images": data.get("images"),
                     "subjects": data.get("subjects"), "labels": data.get("labels"),
                     "machines": data.get("devices"), "cohort": cohort},
      "label": {"mode": report.get("label_mode"), "cap_cutoff": data.get("cap_cutoff"),
                "grade_cutoffs": data.get("grade_cutoffs"), "class_names":
                report.get("class_names")},
      "training": {"source": meta.get("source"),
                   "what": SOURCES.get(meta.get("source"), meta.get("source")),
                   "fold": meta.get("fold"), "search_seed": meta.get("seed"),
                   "training_seed": meta.get("training_seed"), "val_score": meta.get("val_score"),
                   "reward_metric": meta.get("reward_metric")},
      "own_test_metrics": _own_metrics(entry, meta),
      "procedure_estimate": estimate,
      "architecture": {"string": (meta.get("architecture") or {}).get("string"),
                       "params": entry.get("params"), "flops": entry.get("flops"),
                       "fps": entry.get("fps"), "device": report.get("device")},
      "preprocessing": dict(prep, resize="Pillow bilinear (antialiased when shrinking) to "
                            f"{prep.get('image_size')}x{prep.get('image_size')}, aspect ratio "
                            "not kept; RGB to grayscale (ITU-R 601 luma); DICOM: every frame, "
                            "cropped to the first tissue region of SequenceOfUltrasoundRegions"),
      "threshold": {"value": meta.get("threshold"), "how": meta.get("threshold_source")},
      "limits": limits,
      "versions": report.get("versions"),
      "command": report.get("command"),
  }


def _ci(m):
  if not m or m.get("mean") is None:
    return "n/a"
  if not m.get("estimable"):
    return f"{fmt(m['mean'])} (interval not estimable: {m.get('reason')})"
  low, high = m["ci95"]
  covers = ", ".join(c.replace("_", " ") for c in m.get("covers") or [])
  return f"{fmt(m['mean'])} [{fmt(low)}, {fmt(high)}] (covers {covers})"


def markdown(card: dict) -> str:
  """model_card.md's text from `fields`."""
  own, est, t = card["own_test_metrics"], card["procedure_estimate"], card["training"]
  lines = [f"# Model card: {card['model']}", ""]
  if card["simulated_training_data"]:
    lines += ["> **Warning: trained on simulated images.** This model was trained and tested on "
              "the embedded ultrasound simulator, not on patients.", ""]
  lines += ["## Intended use", "", card["intended_use"], "",
            "## Data", "",
            f"- Population: {card['population']['source']}; {card['population']['images']} "
            f"images of {card['population']['subjects']} subjects; labels "
            f"{card['population']['labels']}; machines {card['population']['machines']}.",
            f"- Label: {card['label']['mode']}; fatty when CAP >= {card['label']['cap_cutoff']} "
            f"dB/m (classes {card['label']['class_names']}).", "",
            "## Which training this is", "", f"- {t['what']}.",
            f"- Outer fold {t['fold']}, search seed {t['search_seed']}, training seed "
            f"{t['training_seed']}; validation score ({t['reward_metric']}) {fmt(t['val_score'], 3)}.",
            "", "## This model's own test metrics", ""]
  if own:
    lines += [f"On outer fold {own['fold']}'s test part ({own['n_test']} images; one training, no "
              "interval): " + ", ".join(f"{k} {fmt(v)}" for k, v in own["subject"].items()
                                        if v is not None) + " (subject level); " +
              ", ".join(f"{k} {fmt(v)}" for k, v in own["image"].items() if v is not None) +
              " (image level).", ""]
  else:
    lines += ["None: this model has no test part of its own (see the procedure's estimate).", ""]
  lines += ["## The procedure's estimate (cite this)", "",
            f"Subject level, mean over {est['outer_folds']} outer folds and "
            f"{est['test_trainings']} test trainings ({est['protocol']} protocol); "
            "threshold metrics at each training's validation threshold:", ""]
  lines += [f"- {TITLES[k]}: {_ci(est.get(k))}" for k in ESTIMATE_METRICS if k in est]
  arch = card["architecture"]
  lines += ["", "## Architecture", "", f"`{arch['string']}`", "",
            f"- Parameters {int_text(arch['params'])}, FLOPs {flops_text(arch['flops'])} per "
            f"image, {fmt(arch['fps'], 1)} images/s at batch 1 on {arch['device']}.", "",
            "## Preprocessing and decision threshold", ""]
  prep = card["preprocessing"]
  lines += [f"- Crop: {prep.get('crop')} (box {prep.get('crop_box')}); resize: {prep['resize']}.",
            f"- Threshold: P(fatty) >= {fmt(card['threshold']['value'], 3)} ({card['threshold']['how']}).",
            "", "## Known limits", ""] + [f"- {x}" for x in card["limits"]]
  versions = card.get("versions") or {}
  lines += ["", "## Software", "", "- " + ", ".join(f"{k} {v}" for k, v in versions.items()),
            f"- Command: `{card.get('command')}`", ""]
  return "\n".join(lines)


def write_all(workdir: str, report: dict) -> list:
  """Writes model_card.md and the `model_card` metadata field of every exported model."""
  written = []
  for entry in report["models"]:
    folder = os.path.join(workdir, "models", entry["name"])
    if not os.path.isdir(folder):
      continue
    card = fields(report, entry, checkpoint.load_meta(folder))
    io_utils.atomic_write_text(os.path.join(folder, CARD), markdown(card))
    checkpoint.update_meta(folder, {"model_card": io_utils.to_json_safe(card)})
    written.append(folder)
  return written
