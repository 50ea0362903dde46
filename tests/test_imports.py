"""The search core imports no plotting, statistics, DICOM, TFDS or TensorBoard library."""

import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "sklearn", "pydicom", "tensorflow_datasets", "tensorboardX")


@pytest.mark.parametrize("module", ["nasrl_jax.search", "nasrl_jax.train", "nasrl_jax.strategies",
                                    "nasrl_jax.child", "nasrl_jax.controller",
                                    "nasrl_jax.reinforce", "nasrl_jax.space"])
def test_core_modules_import_light(module):
  code = (f"import sys, {module}\n"
          f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       check=True).stdout.strip()
  assert out == "[]", f"{module} imports {out}"
