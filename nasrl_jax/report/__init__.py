"""The run's report: report.md, report.json, table1.csv and plots/*.png.

`write_report(results, workdir)` is the entry point the pipeline calls. It validates `results`
first (`schema`; a malformed dict raises UserInputError naming the field and writes nothing),
computes every number (`aggregate`: per model, fold and test training, with `intervals` saying
what each interval covers; `statistics`: the pre-specified primary family and the exploratory
comparisons, with their sentences), renders everything in memory (`markdown`, `plots`), and only
then writes the files atomically (`io_utils`), so a failure never leaves half a report. This
module owns that sequence and the report.json object (its contract is in docs/notes_report.md).

`plots` (matplotlib) is imported only when drawing: importing `nasrl_jax.report` stays light.
"""

import dataclasses
import os

from nasrl_jax import io_utils
from nasrl_jax.report import aggregate
from nasrl_jax.report import html
from nasrl_jax.report import markdown
from nasrl_jax.report import primary as primary_lib
from nasrl_jax.report import schema
from nasrl_jax.report import statistics
from nasrl_jax.report.aggregate import METRICS
from nasrl_jax.report.markdown import PAPER_SOURCE
from nasrl_jax.report.markdown import PAPER_TABLE1
from nasrl_jax.report.markdown import TABLE1_COLUMNS
from nasrl_jax.report.schema import validate

__all__ = ["write_report", "render", "Rendered", "validate", "METRICS", "PAPER_TABLE1",
           "PAPER_SOURCE", "TABLE1_COLUMNS"]

# Sections of `results` copied into report.json as they are (after JSON-safe conversion).
PASS_THROUGH = ("command", "config_variant", "date", "device", "protocol", "label_mode",
                "class_names", "seeds", "test_seeds", "data", "cohort", "flow", "outer_folds",
                "rescore", "search", "final_search", "compute", "compile", "versions",
                "reward_noise", "fidelity")
# What a fold's score is (the report states it; tests check the aggregation follows it).
FOLD_SCORE = ("the mean of its test trainings' metrics (each training scored on its own; no "
              "ensemble of probabilities)")


@dataclasses.dataclass
class Rendered:
  """Everything the report writes, in memory."""
  report: dict  # The report.json object (JSON-safe).
  markdown: str  # report.md.
  html: str  # report.html: report.md rendered, plots embedded.
  csv: str  # table1.csv.
  plots: dict  # {name: PNG bytes}; empty when rendered without plots.


def build_report_json(results, summary, primary, comparisons):
  """The report.json object: the contract fields, the passed-through sections, and the detail."""
  report = {key: results.get(key) for key in PASS_THROUGH if key in results}
  report.update(
      models=summary.models,
      primary=primary,
      comparisons=comparisons,
      fold_score=FOLD_SCORE,
      winners=summary.winners,
      winner_agreement=summary.agreement,
      rescore_summary=summary.rescore,
      search_cost=summary.search_cost,
      bootstrap=summary.bootstrap,
      alpha=statistics.ALPHA,
      paper_table1={k: dict(v) for k, v in PAPER_TABLE1.items()},
  )
  report.setdefault("outer_folds", [])
  report.setdefault("rescore", {})
  return io_utils.to_json_safe(report)


def render(results, *, plots=True):
  """Validates `results` and renders the whole report in memory.

  Args:
    results: the pipeline's results dict (schema in docs/notes_report.md).
    plots: draw the PNGs (tests of the wording skip them: drawing is most of the time).

  Returns:
    a Rendered.

  Raises:
    UserInputError: `results` is malformed.
  """
  validate(results)
  summary = aggregate.summarise(results)
  spec = primary_lib.parse(results.get("primary_spec") or primary_lib.DEFAULT)
  primary, comparisons = statistics.compare(summary, spec)
  report = build_report_json(results, summary, primary, comparisons)
  pngs = {}
  if plots:
    from nasrl_jax.report import plots as plots_lib  # matplotlib only when drawing.
    pngs = plots_lib.render(report)
  text = markdown.build(report, tuple(pngs))
  return Rendered(report=report, markdown=text, html=html.render(text, pngs),
                  csv=markdown.table1_csv(report), plots=pngs)


def write_report(results: dict, workdir: str) -> dict:
  """Writes report.md, report.html, report.json, table1.csv and plots/*.png under `workdir`.

  Args:
    results: the pipeline's results dict (plain Python types; schema in docs/notes_report.md).
    workdir: the run's folder; created if missing.

  Returns:
    {"report_md", "report_html", "report_json", "table1_csv": path, "plots": {name: path}}.

  Raises:
    UserInputError: `results` is malformed (nothing is written then).
  """
  rendered = render(results)
  plots_dir = os.path.join(workdir, "plots")
  plot_paths = {name: os.path.join(plots_dir, f"{name}.png") for name in rendered.plots}
  for name, data in rendered.plots.items():
    io_utils.atomic_write_bytes(plot_paths[name], data)
  paths = {"report_json": os.path.join(workdir, "report.json"),
           "table1_csv": os.path.join(workdir, "table1.csv"),
           "report_md": os.path.join(workdir, "report.md"),
           "report_html": os.path.join(workdir, "report.html")}
  io_utils.atomic_write_json(paths["report_json"], rendered.report)
  io_utils.atomic_write_text(paths["report_html"], rendered.html)
  io_utils.atomic_write_text(paths["table1_csv"], rendered.csv)
  io_utils.atomic_write_text(paths["report_md"], rendered.markdown)
  paths["plots"] = plot_paths
  return paths
