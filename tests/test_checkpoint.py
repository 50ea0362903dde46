"""Tests for nasrl_jax.checkpoint: round trips, retention, corruption fallback, no pickles."""

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasrl_jax import checkpoint
from nasrl_jax.errors import UserInputError

# A restore that fails inside Orbax (the corruption tests do this on purpose) leaves tensorstore
# callbacks aimed at Orbax's closed asyncio loop and un-awaited Orbax coroutines; Python reports
# them as warnings in whichever test runs when they fire. The fallback is what the tests check.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine '.*' was never awaited:RuntimeWarning"),
]


def _controller_state(seed: int, hidden: int = 8):
  """A controller-like state: dict params, real optax adam state, baseline, step, key data."""
  rng = np.random.default_rng(seed)
  params = {
      "lstm": {"w": jnp.asarray(rng.standard_normal((4, hidden)), jnp.float32),
               "b": jnp.asarray(rng.standard_normal((hidden,)), jnp.float32)},
      "emb": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
  }
  opt = optax.adam(1e-3)
  opt_state = opt.init(params)
  # One real update so mu/nu/count are not all zeros.
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = opt.update(grads, opt_state, params)
  return {
      "params": params,
      "opt_state": opt_state,
      "baseline": jnp.float32(0.25 + seed),
      "step": seed,
      "key": jax.random.key_data(jax.random.PRNGKey(seed)),
  }


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


def _model_params(seed: int):
  rng = np.random.default_rng(seed)
  return {
      "convs": {0: {"kernel": rng.standard_normal((3, 3, 1, 8)).astype(np.float32),
                    "bias": rng.standard_normal((8,)).astype(np.float32)},
                1: {"kernel": rng.standard_normal((5, 5, 8, 4)).astype(np.float32),
                    "bias": np.zeros((4,), np.float32)}},
      "bn": {"mean": jnp.asarray(rng.standard_normal((4,)), jnp.float32),
             "count": np.int32(7)},
      "head": {"kernel": rng.standard_normal((16, 2)).astype(np.float32)},
      "dropout": {},
  }


_META = {"architecture": {"kernels": [3, 5], "filters": [8, 4]}, "head": "gap",
         "batch_norm": True, "width_multiplier": 0.125, "input_shape": [32, 32, 1],
         "num_classes": 2, "preprocessing": {"image_size": 32, "crop": "auto",
                                             "crop_box": None, "cap_cutoff": 238.0},
         "label_mode": "cap", "threshold": 0.5, "metrics": {"val_acc": 0.75}}


def _files(root):
  return [p for p in pathlib.Path(root).rglob("*") if p.is_file()]


def test_controller_round_trip_keeps_structure_and_types(tmp_path):
  state = _controller_state(3)
  with checkpoint.ControllerCheckpointer(tmp_path / "c") as ckpt:
    assert ckpt.latest_step() is None
    ckpt.save(3, state, {"history_len": 24, "config_hash": "abc"})
  # A fresh object, as after a Colab disconnect.
  with checkpoint.ControllerCheckpointer(tmp_path / "c") as ckpt:
    assert ckpt.latest_step() == 3
    step, restored, meta = ckpt.restore(_controller_state(0))
  assert step == 3
  assert meta == {"history_len": 24, "config_hash": "abc"}
  _assert_trees_equal(restored, state)
  assert type(restored["opt_state"][0]).__name__ == "ScaleByAdamState"
  assert restored["opt_state"][0].count == state["opt_state"][0].count
  assert isinstance(restored["step"], int) and restored["step"] == 3
  assert restored["key"].dtype == jnp.uint32


def test_controller_restore_into_abstract_template(tmp_path):
  state = _controller_state(2)
  with checkpoint.ControllerCheckpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(0, state, {})
    template = jax.eval_shape(lambda: _controller_state(0))
    step, restored, _ = ckpt.restore(template)
  assert step == 0
  np.testing.assert_array_equal(restored["params"]["emb"], state["params"]["emb"])
  assert int(restored["step"]) == 2


def test_controller_keeps_last_max_to_keep(tmp_path):
  with checkpoint.ControllerCheckpointer(tmp_path, max_to_keep=2) as ckpt:
    for step in range(5):
      ckpt.save(step, _controller_state(step), {"step": step})
    assert ckpt.all_steps() == [3, 4]
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3", "4"]


def test_controller_no_checkpoint_returns_none(tmp_path):
  with checkpoint.ControllerCheckpointer(tmp_path / "empty") as ckpt:
    assert ckpt.restore(_controller_state(0)) is None
    assert ckpt.latest_step() is None


def _corrupt_truncate_data(step_dir):
  data = [p for p in _files(step_dir / "state") if "/d/" in str(p)]
  assert data, "expected OCDBT data files"
  for p in data:
    with open(p, "r+b") as f:
      f.truncate(max(1, p.stat().st_size // 3))


def _corrupt_delete_metadata(step_dir):
  (step_dir / "state" / "_METADATA").unlink()


def _corrupt_remove_commit_marker(step_dir):
  (step_dir / checkpoint.COMMIT_MARKER).unlink()


def _corrupt_flip_bytes(step_dir):
  data = [p for p in _files(step_dir / "state") if "/d/" in str(p)]
  for p in data:
    b = bytearray(p.read_bytes())
    b[-20] ^= 0x01
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("corrupt", [_corrupt_truncate_data, _corrupt_delete_metadata,
                                     _corrupt_remove_commit_marker, _corrupt_flip_bytes])
def test_controller_corrupt_latest_falls_back_with_warning(tmp_path, caplog, corrupt):
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    ckpt.save(1, _controller_state(1), {"n": 1})
    ckpt.save(2, _controller_state(2), {"n": 2})
  corrupt(tmp_path / "2")
  caplog.set_level(logging.WARNING)
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    step, restored, meta = ckpt.restore(_controller_state(0))
    assert step == 1 and meta == {"n": 1}
    _assert_trees_equal(restored, _controller_state(1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step 2" in w and "falling back" in w for w in warnings), warnings
    # The bad step is moved aside, so the search can write step 2 again.
    assert not (tmp_path / "2").exists()
    assert any(p.name.startswith("2-") for p in (tmp_path / checkpoint.CORRUPT_SUBDIR).iterdir())
    ckpt.save(2, _controller_state(5), {"n": 5})
    assert ckpt.restore(_controller_state(0))[0] == 2


def test_controller_checksum_mismatch_falls_back(tmp_path, caplog):
  # Bytes that still decode but are not what was saved (e.g. a file swapped in by a sync
  # client): simulated by changing the stored digest, so only the SHA-256 check can catch it.
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    ckpt.save(1, _controller_state(1), {})
    ckpt.save(2, _controller_state(2), {})
  record = tmp_path / "2" / "integrity" / "metadata"
  integrity = json.loads(record.read_text())
  integrity["sha256"] = "0" * 64
  record.write_text(json.dumps(integrity))
  caplog.set_level(logging.WARNING)
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    result = ckpt.restore(_controller_state(0))
  assert result is not None and result[0] == 1
  assert any("step 2" in r.getMessage() and "SHA-256" in r.getMessage()
             for r in caplog.records)


def test_controller_all_corrupt_returns_none(tmp_path, caplog):
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    ckpt.save(0, _controller_state(0), {})
  _corrupt_delete_metadata(tmp_path / "0")
  caplog.set_level(logging.WARNING)
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    assert ckpt.restore(_controller_state(0)) is None
    ckpt.save(0, _controller_state(0), {})  # Starting over works.
  assert any("step 0" in r.getMessage() for r in caplog.records)


def test_controller_interrupted_save_is_ignored_and_cleaned(tmp_path):
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    ckpt.save(2, _controller_state(2), {})
  # What a kill during Orbax's write of step 3 leaves behind (before its atomic rename).
  partial = tmp_path / "3.orbax-checkpoint-tmp-1700000000000000"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "_METADATA").write_text("{")
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 2
    assert ckpt.restore(_controller_state(0))[0] == 2
    ckpt.save(3, _controller_state(3), {})
  assert not partial.exists()


def test_controller_shape_mismatch_is_user_error_not_fallback(tmp_path):
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    ckpt.save(0, _controller_state(0, hidden=8), {})
    with pytest.raises(UserInputError, match=r"does not match.*lstm.*shape"):
      ckpt.restore(_controller_state(0, hidden=16))
  assert (tmp_path / "0").exists()  # Nothing was moved aside.


def test_controller_save_rejects_bad_input(tmp_path):
  with checkpoint.ControllerCheckpointer(tmp_path) as ckpt:
    ckpt.save(4, _controller_state(0), {})
    with pytest.raises(ValueError, match="step 4 is already there"):
      ckpt.save(4, _controller_state(0), {})
    with pytest.raises(TypeError, match="not JSON-serializable"):
      ckpt.save(5, _controller_state(0), {"a": np.zeros(2)})
    with pytest.raises(TypeError, match="key_data"):
      ckpt.save(5, {"key": jax.random.key(0)}, {})
  with pytest.raises(ValueError, match="max_to_keep"):
    checkpoint.ControllerCheckpointer(tmp_path, max_to_keep=0)


def test_save_model_load_model_round_trip_without_template(tmp_path):
  params = _model_params(0)
  checkpoint.save_model(tmp_path / "models" / "NASRL", params, _META)
  loaded, meta = checkpoint.load_model(tmp_path / "models" / "NASRL")
  assert meta == json.loads(json.dumps(_META))
  assert set(loaded["convs"]) == {0, 1}  # int keys come back as int.
  assert loaded["dropout"] == {}
  expected = jax.device_get(params)
  assert jax.tree.structure(loaded) == jax.tree.structure(expected)
  for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
    assert isinstance(x, np.ndarray)
    assert x.dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(x, y)
  # The metadata is plain JSON a user can read.
  on_disk = json.loads((tmp_path / "models" / "NASRL" / "meta" / "metadata").read_text())
  assert on_disk["num_classes"] == 2
  # Saving again replaces the model.
  checkpoint.save_model(tmp_path / "models" / "NASRL", _model_params(1), {"v": 2})
  loaded, meta = checkpoint.load_model(tmp_path / "models" / "NASRL")
  assert meta == {"v": 2}
  np.testing.assert_array_equal(loaded["head"]["kernel"], _model_params(1)["head"]["kernel"])


def test_load_model_bad_folders_raise_one_line_user_error(tmp_path):
  with pytest.raises(UserInputError, match="no such model"):
    checkpoint.load_model(tmp_path / "missing")
  checkpoint.save_model(tmp_path / "swapped", _model_params(0), {})
  record = tmp_path / "swapped" / "integrity" / "metadata"
  record.write_text(record.read_text().replace('"sha256": "', '"sha256": "0'))
  with pytest.raises(UserInputError, match="SHA-256"):
    checkpoint.load_model(tmp_path / "swapped")
  checkpoint.save_model(tmp_path / "m", _model_params(0), {})
  for p in [p for p in _files(tmp_path / "m" / "params") if "/d/" in str(p)]:
    with open(p, "r+b") as f:
      f.truncate(10)
  with pytest.raises(UserInputError, match="unreadable or corrupt") as err:
    checkpoint.load_model(tmp_path / "m")
  assert "\n" not in str(err.value)
  (tmp_path / "m" / checkpoint.COMMIT_MARKER).unlink()
  with pytest.raises(UserInputError, match="incomplete"):
    checkpoint.load_model(tmp_path / "m")


def test_save_model_rejects_non_dict_params(tmp_path):
  with pytest.raises(TypeError, match=r"\['layers'\].*nested dicts"):
    checkpoint.save_model(tmp_path / "m", {"layers": [np.zeros(2)]}, {})
  with pytest.raises(TypeError, match="JSON"):
    checkpoint.save_model(tmp_path / "m", {"w": np.zeros(2)}, {"x": object()})
  assert not (tmp_path / "m").exists()


def test_model_store_all_children(tmp_path):
  with checkpoint.ModelStore(tmp_path) as store:
    for i in (4, 1, 9):  # Out of order, as after a resume.
      store.save(i, _model_params(i), {"child": i})
    store.save(4, _model_params(40), {"child": 40})  # Replaces child 4.
    assert store.indices() == [1, 4, 9]
    params, meta = store.load(4)
  assert meta == {"child": 40}
  np.testing.assert_array_equal(params["convs"][0]["kernel"],
                                _model_params(40)["convs"][0]["kernel"])
  loaded, _ = checkpoint.load_model(tmp_path / "9")  # The save_model layout.
  np.testing.assert_array_equal(loaded["head"]["kernel"], _model_params(9)["head"]["kernel"])


def test_model_store_keeps_top_k_by_score(tmp_path):
  with checkpoint.ModelStore(tmp_path, max_to_keep=2) as store:
    for i, score in enumerate([0.5, 0.9, 0.1, 0.7]):
      store.save(i, _model_params(i), {"reward": score}, score=score)
    assert store.indices() == [1, 3]
    assert store.scores() == {1: 0.9, 3: 0.7}
    assert store.would_keep(0.8) and not store.would_keep(0.6)
    with pytest.raises(ValueError, match="needs a score"):
      store.save(5, _model_params(5), {})
  # Reopened (resume): ranking survives.
  with checkpoint.ModelStore(tmp_path, max_to_keep=2) as store:
    store.save(7, _model_params(7), {}, score=0.95)
    assert store.indices() == [1, 7]


def test_nothing_written_is_a_pickle(tmp_path):
  with checkpoint.ControllerCheckpointer(tmp_path / "c") as ckpt:
    ckpt.save(0, _controller_state(0), {"a": 1})
  checkpoint.save_model(tmp_path / "m", _model_params(0), _META)
  with checkpoint.ModelStore(tmp_path / "s", max_to_keep=1) as store:
    store.save(0, _model_params(0), {}, score=1.0)
  files = _files(tmp_path)
  assert len(files) > 20
  for p in files:
    assert p.suffix not in (".pkl", ".pickle", ".npy", ".npz"), p
    head = p.read_bytes()[:2]
    is_pickle = len(head) == 2 and head[0] == 0x80 and head[1] in range(2, 6)
    assert not is_pickle, p
    # Every file is OCDBT (magic 0x0cdb), a zstd frame inside an OCDBT store, JSON, or
    # Orbax's plain-text commit marker.
    if head == b"\x0c\xdb" or p.read_bytes()[:4] == b"\x28\xb5\x2f\xfd":
      continue
    text = p.read_text(encoding="utf-8")
    if p.name == checkpoint.COMMIT_MARKER:
      assert text.startswith("Checkpoint commit was successful")
    else:
      json.loads(text)
