import numpy as np
import pytest

from nasrl_jax import evaluate, metrics, pipeline, search
from nasrl_jax.errors import UserInputError


def _fold():
  return {"train": np.arange(0, 20), "val": np.arange(20, 25), "test": np.arange(25, 30)}


def test_training_indices_balance_modes(config_factory):
  c = config_factory("tiny")
  labels = np.array([0] * 5 + [1] * 15 + [0] * 5 + [1] * 5)
  idx, rot = evaluate.training_indices(_fold(), labels, c.data, 0)
  assert np.sum(labels[idx] == 0) == np.sum(labels[idx] == 1) == 15
  assert set(rot[20:]) <= {1, 2, 3} and not rot[:20].any()
  c.data.balance_copies = "repeat"
  idx2, rot2 = evaluate.training_indices(_fold(), labels, c.data, 0)
  np.testing.assert_array_equal(idx, idx2)
  assert not rot2.any()
  c.data.balance_copies = "flip"
  with pytest.raises(UserInputError, match="balance_copies"):
    evaluate.training_indices(_fold(), labels, c.data, 0)
  c.data.balance = False
  idx3, rot3 = evaluate.training_indices(_fold(), labels, c.data, 0)
  np.testing.assert_array_equal(idx3, np.arange(20))


def test_fold_split_never_contains_test_images(config_factory):
  c = config_factory("tiny")
  labels = np.arange(30) % 2
  sizes = evaluate.padded_sizes([_fold()], labels, c)
  s = evaluate.fold_split(_fold(), labels, c, sizes)
  assert not set(s.train_idx) & set(range(25, 30))
  assert set(s.eval_idx) <= set(range(20, 25))
  assert len(s.train_idx) % c.train.batch_size == 0


def test_score_matches_sklearn_and_subject_means():
  y = np.array([0, 0, 1, 1, 1, 0])
  p = np.array([0.2, 0.6, 0.7, 0.4, 0.9, 0.1])
  sid = np.array(["a", "a", "b", "b", "c", "d"])
  out = evaluate.score(y, p, sid)
  assert out["image"]["accuracy"] == pytest.approx(4 / 6)
  assert out["image"]["sensitivity"] == pytest.approx(2 / 3)
  assert out["image"]["specificity"] == pytest.approx(2 / 3)
  assert out["image"]["auroc"] == pytest.approx(metrics.binary_metrics(y, p)["auroc"])
  # Subjects: a (0, mean 0.4), b (1, mean 0.55), c (1, 0.9), d (0, 0.1): all correct.
  assert out["subject"]["n"] == 4 and out["subject"]["accuracy"] == 1.0


def test_search_evaluator_only_receives_the_search_folds_train_and_val(tmp_path, monkeypatch,
                                                                       config_factory):
  """Runs the pipeline with a recording evaluator: no test index of fold f reaches the search."""
  seen = []

  class Recorder:
    parallelism = 1

    def __init__(self, config, data, split, *args, **kwargs):
      seen.append(split)

    def __call__(self, archs):
      return [0.5 for _ in archs]

    def close(self):
      pass

  monkeypatch.setattr(search, "ChildEvaluator", Recorder)
  monkeypatch.setattr(pipeline.report_lib, "write_report", lambda results, workdir: {})
  c = config_factory("tiny")
  c.data.cache_dir = str(tmp_path / "cache")
  c.eval.models = ()
  c.search.fold = 1
  pipeline.run(c, str(tmp_path / "w"))
  from nasrl_jax.data import folds as folds_lib
  _, _, folds = folds_lib.read_folds(str(tmp_path / "w" / "folds.json"))
  test = set(folds[1]["test"].tolist())
  allowed = set(folds[1]["train"].tolist()) | set(folds[1]["val"].tolist())
  assert len(seen) == 2  # REINFORCE and random search.
  for split in seen:
    used = set(split.train_idx.tolist()) | set(split.eval_idx.tolist())
    assert used <= allowed and not used & test
    assert set(split.eval_idx[split.eval_w > 0].tolist()) == set(folds[1]["val"].tolist())
