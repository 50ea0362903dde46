"""Shared test helpers: the project's config file, loaded by path as launch.py does."""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def load_config(arg=None):
  spec = importlib.util.spec_from_file_location(
      "fatty_liver_config", os.path.join(ROOT, "configs", "fatty_liver.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.fixture
def config_factory():
  return load_config
