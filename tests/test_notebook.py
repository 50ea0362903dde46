"""Tests of notebooks/fatty_liver_nasrl.ipynb: its structure, and a CPU execution with nbclient.

The execution test injects a cell after the one tagged `parameters` (what papermill does) that
switches to the `tiny` variant and a temporary workdir, runs every cell in a fresh `python3` kernel
whose PYTHONPATH holds the checkout (so the install cell has nothing to install), and checks the
report files, the displayed report, the predictions and the config-override guard.
"""

import ast
import json
import os

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "fatty_liver_nasrl.ipynb")
NUM_PREDICT = 2


def _read():
  return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_index(nb):
  found = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(found) == 1, f"expected one cell tagged 'parameters', found {len(found)}"
  return found[0]


def _text_of(outputs):
  """stdout/stderr text and text/markdown / text/plain data of a cell's outputs."""
  parts = []
  for out in outputs:
    if out.output_type == "stream":
      parts.append(out.text)
    elif out.output_type in ("display_data", "execute_result"):
      parts.append(out.data.get("text/markdown", "") or out.data.get("text/plain", ""))
  return "\n".join(parts)


def test_notebook_is_valid_and_stored_without_outputs():
  nb = _read()
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == "python3"
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code, "no code cell"
  assert all(not c.outputs and c.execution_count is None for c in code), "outputs are stored"


def test_every_code_cell_follows_a_markdown_purpose():
  nb = _read()
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert i > 0 and nb.cells[i - 1].cell_type == "markdown", f"code cell {i} has no purpose"
      purpose = nb.cells[i - 1].source.strip()
      assert purpose and "\n" not in purpose, f"code cell {i}: purpose is not one line"


def test_parameters_cell_defaults():
  nb = _read()
  tree = ast.parse(nb.cells[_parameters_index(nb)].source)
  values = {t.id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) for t in node.targets}
  assert values["CONFIG_VARIANT"] == "quick"
  assert values["RUN_PAPER"] is False
  assert values["USE_DRIVE"] is False
  assert values["MANIFEST"] == ""
  assert isinstance(values["WORKDIR"], str)
  # Only plain assignments: papermill-style injection overrides names, never runs logic here.
  assert all(isinstance(node, ast.Assign) for node in tree.body)


@pytest.mark.slow(cpu_s=15)
def test_notebook_runs_tiny_pipeline_on_cpu(tmp_path, monkeypatch, tiny_run):
  """The notebook on a copy of the session's tiny run: its pipeline.run resumes (nothing retrains),
  then the report, FPS, plots and predictions run as a Colab user would see them."""
  import shutil
  nb = _read()
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run.workdir, workdir)
  overrides = {"data.cache_dir": tiny_run.data_cache,
               "compile_cache_dir": tiny_run.config.compile_cache_dir}
  injected = nbformat.v4.new_code_cell(
      f"CONFIG_VARIANT = 'tiny'\nWORKDIR = {workdir!r}\nNUM_PREDICT = {NUM_PREDICT}\n"
      f"OVERRIDES = {overrides!r}",
      metadata={"tags": ["injected-parameters"]})
  nb.cells.insert(_parameters_index(nb) + 1, injected)
  # Checks that need the notebook's kernel state, run after everything else.
  nb.cells.append(nbformat.v4.new_code_cell(
      "assert load_config('tiny', {'train.epochs': 3}).train.epochs == 3\n"
      "try:\n"
      "  load_config('tiny', {'train.epochz': 3})\n"
      "except ValueError as e:\n"
      "  print('REFUSED:', e)\n"
      "print('REPORT_DIR:', REPORT_DIR)"))
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  client = NotebookClient(nb, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
  try:
    client.execute()
  except CellExecutionError as e:  # Keep the failing cell's message short in the test report.
    pytest.fail(f"a notebook cell errored: {str(e)[-3000:]}")

  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "error"]
  assert not errors
  for name in ("report.md", "report.json", "table1.csv", "folds.json", "config.json",
               os.path.join("search", "history.jsonl")):
    assert os.path.isfile(os.path.join(workdir, name)), name
  plots = sorted(os.listdir(os.path.join(workdir, "plots")))
  assert plots and all(p.endswith(".png") for p in plots)
  assert os.path.isdir(os.path.join(workdir, "models", "NASRL"))
  with open(os.path.join(workdir, "search", "history.jsonl"), encoding="utf-8") as f:
    assert f.read() == (tiny_run.workdir / "search" / "history.jsonl").read_text()  # Resumed.
  with open(os.path.join(workdir, "report.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert {m["name"] for m in report["models"]} == {"NASRL", "VGG19", "RandomSearch", "Evolution"}

  text = {i: _text_of(c.outputs) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
  everything = "\n".join(text.values())
  assert "Table 1" in everything and "Comparisons" in everything  # The report was shown.
  assert "nested cross-validation" in everything
  assert sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "image/png" in o.get("data", {})) >= len(plots)
  assert "Paper-scale run skipped" in everything
  assert f"REPORT_DIR: {workdir}" in everything
  assert "REFUSED: override 'train.epochz': no such config field" in everything

  preds = os.path.join(workdir, "predictions", "preds.csv")
  with open(preds, encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert len(lines) == 1 + NUM_PREDICT  # Header + one row per held-out image.
  saliency = os.listdir(os.path.join(workdir, "predictions", "saliency"))
  assert len(saliency) == NUM_PREDICT
