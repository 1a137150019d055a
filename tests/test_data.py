"""Tests of jaxopt_lab.data: step-indexed batches, splits, standardisation, the text corpus."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import datasets
from sklearn.preprocessing import StandardScaler

from jaxopt_lab.data import batching, synthetic, tabular, text

# ----------------------------------------------------------------------------- batches


def test_batch_is_a_function_of_seed_and_step():
  a = batching.batch_indices(100, 8, data_seed=3, start_step=5, num_steps=30)
  b = batching.batch_indices(100, 8, data_seed=3, start_step=5, num_steps=30)
  np.testing.assert_array_equal(a, b)
  c = batching.batch_indices(100, 8, data_seed=4, start_step=5, num_steps=30)
  assert not np.array_equal(a, c)
  assert a.shape == (30, 8) and a.min() >= 0 and a.max() < 100


@pytest.mark.parametrize('n, batch', [(96, 8), (100, 8), (50, 50)])
def test_each_epoch_sees_examples_at_most_once(n, batch):
  per_epoch = batching.steps_per_epoch(n, batch)
  assert per_epoch == n // batch
  idx = batching.batch_indices(n, batch, data_seed=0, start_step=0, num_steps=3 * per_epoch)
  for epoch in range(3):
    seen = idx[epoch * per_epoch:(epoch + 1) * per_epoch].ravel()
    assert len(np.unique(seen)) == per_epoch * batch
    if n % batch == 0:
      np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # Exactly once.
  if per_epoch > 1:  # A fresh order each epoch.
    assert not np.array_equal(idx[:per_epoch], idx[per_epoch:2 * per_epoch])


def test_gather_is_numpy_fancy_indexing():
  rng = np.random.default_rng(0)
  arrays = {'inputs': rng.normal(size=(50, 3, 2)).astype(np.float32),
            'labels': rng.integers(0, 9, 50).astype(np.int32),
            'tokens': rng.integers(0, 256, (50, 17)).astype(np.uint8)}
  idx = batching.batch_indices(50, 4, data_seed=1, start_step=3, num_steps=20)
  out = batching.gather(arrays, idx)
  for key, array in arrays.items():
    assert out[key].dtype == array.dtype
    np.testing.assert_array_equal(out[key], array[idx])


@pytest.mark.parametrize('start, k', [(0, 7), (3, 9), (12, 1), (25, 0)])
def test_resume_at_any_step(start, k):
  whole = batching.batch_indices(50, 4, data_seed=9, start_step=0, num_steps=start + k)
  part = batching.batch_indices(50, 4, data_seed=9, start_step=start, num_steps=k)
  np.testing.assert_array_equal(part, whole[start:])


def test_epoch_orders_are_uniform_and_independent():
  # 6000 epochs of 6 examples: every example as often in every position (chi-square, 25 dof),
  # and consecutive epochs' first examples independent (chi-square, 25 dof).
  perms = batching.epoch_permutations(6, 11, tuple(range(6000)))
  np.testing.assert_array_equal(np.sort(perms, axis=1), np.tile(np.arange(6), (6000, 1)))
  counts = np.stack([np.bincount(perms[:, j], minlength=6) for j in range(6)])
  assert stats.chi2_contingency(counts).pvalue > 1e-3
  pairs = np.zeros((6, 6))
  np.add.at(pairs, (perms[:-1, 0], perms[1:, 0]), 1)
  assert stats.chi2_contingency(pairs).pvalue > 1e-3
  assert stats.chisquare(counts[:, 0]).pvalue > 1e-3
  other_seed = batching.epoch_permutations(6, 12, tuple(range(6000)))
  assert np.mean(other_seed[:, 0] == perms[:, 0]) < 0.2  # 1/6 expected by chance


def test_batch_size_errors_name_the_field_and_size():
  with pytest.raises(ValueError, match=r'data.batch_size: 101 is larger than the training set '
                                       r'\(100 examples\)'):
    batching.check_batch_size(101, 100)
  with pytest.raises(ValueError, match='data.batch_size: must be positive'):
    batching.steps_per_epoch(10, 0)
  with pytest.raises(ValueError, match='data_seed'):
    batching.batch_indices(10, 2, -1, 0, 1)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_planted_rule():
  data = synthetic.make_synthetic()
  assert [data.size(s) for s in ('train', 'valid', 'test')] == [100, 1000, 1000]
  assert data.train['inputs'].shape == (100, 10) and data.train['inputs'].dtype == np.float32
  w = synthetic.planted_weights(10, 0)
  for split in ('valid', 'test'):
    x, y = data[split]['inputs'], data[split]['labels']
    assert set(np.unique(y)) == {0.0, 1.0}
    rule_accuracy = np.mean((x @ w > 0) == (y > 0.5))
    # The planted rule scores the Bayes accuracy up to binomial noise (sd 0.0095 at n=1000).
    assert abs(rule_accuracy - synthetic.bayes_accuracy(0.1)) < 0.04
  clean = synthetic.make_synthetic(flip_prob=0.0, seed=5)
  x, y = clean.test['inputs'], clean.test['labels']
  np.testing.assert_array_equal((x @ synthetic.planted_weights(10, 5) > 0), y > 0.5)
  assert synthetic.bayes_accuracy(0.0) == 1.0


def test_synthetic_is_deterministic_and_splits_differ():
  a, b = synthetic.make_synthetic(seed=1), synthetic.make_synthetic.__wrapped__(seed=1)
  np.testing.assert_array_equal(a.train['inputs'], b.train['inputs'])
  assert not np.array_equal(a.train['inputs'], synthetic.make_synthetic(seed=2).train['inputs'])
  rows = {s: {r.tobytes() for r in a[s]['inputs']} for s in ('train', 'valid', 'test')}
  assert not rows['train'] & rows['valid'] and not rows['train'] & rows['test']
  assert not rows['valid'] & rows['test']
  with pytest.raises(ValueError):
    a.train['inputs'][0, 0] = 1.0  # Cached arrays are read-only.


@pytest.mark.parametrize('kwargs, field', [
    (dict(flip_prob=0.5), 'data.flip_prob'), (dict(num_train=0), 'data.num_train'),
    (dict(features=0), 'data.features'),
])
def test_synthetic_bad_arguments(kwargs, field):
  with pytest.raises(ValueError, match=field):
    synthetic.make_synthetic(**kwargs)


# ----------------------------------------------------------------------------- sklearn data


def test_split_indices_are_disjoint_and_cover():
  train, valid, test = tabular.split_indices(569, 0.2, 0.2, seed=0)
  assert (len(train), len(valid), len(test)) == (341, 114, 114)
  all_idx = np.concatenate([train, valid, test])
  np.testing.assert_array_equal(np.sort(all_idx), np.arange(569))
  again = tabular.split_indices(569, 0.2, 0.2, seed=0)
  for a, b in zip((train, valid, test), again, strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='data.valid_fraction'):
    tabular.split_indices(10, 1.5, 0.2, 0)
  with pytest.raises(ValueError, match='leave no training examples'):
    tabular.split_indices(10, 0.5, 0.5, 0)


@pytest.mark.parametrize('name, loader, classes', [
    ('breast_cancer', datasets.load_breast_cancer, 2), ('digits', datasets.load_digits, 10),
])
def test_standardised_with_train_statistics_only(name, loader, classes):
  data = tabular.load(name, 0.2, 0.2, 0)
  bunch = loader()
  idx = dict(zip(('train', 'valid', 'test'),
                 tabular.split_indices(len(bunch.data), 0.2, 0.2, 0), strict=True))
  scaler = StandardScaler().fit(bunch.data[idx['train']])
  for split, i in idx.items():
    np.testing.assert_allclose(
        data[split]['inputs'], scaler.transform(bunch.data[i]), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(data[split]['labels'], bunch.target[i])
  train = data.train['inputs']
  assert np.allclose(train.mean(0), 0, atol=1e-5)
  assert not np.allclose(data.valid['inputs'].mean(0), 0, atol=1e-3)  # Valid stats not used.
  assert len(np.unique(np.concatenate([data[s]['labels'] for s in idx]))) == classes
  expected_dtype = np.float32 if classes == 2 else np.int32
  assert data.train['labels'].dtype == expected_dtype


# ----------------------------------------------------------------------------- text


def _write(tmp_path, files: dict[str, bytes]):
  for name, content in files.items():
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
  return str(tmp_path)


@pytest.fixture
def text_dir(tmp_path):
  rng = np.random.default_rng(0)
  files = {f'd{i % 3}/f{i}.txt': bytes(rng.integers(32, 127, int(rng.integers(50, 400))).astype(
      np.uint8)) for i in range(40)}
  files['image.bin'] = b'\x89PNG\x00\x01\x02'  # Binary: skipped.
  files['empty.txt'] = b''
  return _write(tmp_path, files), files


def test_text_splits_by_file(text_dir):
  root, files = text_dir
  corpus = text.load_corpus((root,), 10**6, 0.2, 0.2)
  names = {s: [r for r, _ in corpus.files[s]] for s in ('train', 'valid', 'test')}
  assert not set(names['train']) & set(names['valid'])
  assert not set(names['train']) & set(names['test'])
  assert not set(names['valid']) & set(names['test'])
  everything = sorted(sum(names.values(), []))
  assert everything == sorted(k for k, v in files.items() if v and b'\0' not in v)
  for split in names:
    for rel, data in corpus.files[split]:
      assert data.tobytes() == files[rel]
  total = sum(len(v) for k, v in files.items() if k.endswith('.txt'))
  for split in ('valid', 'test'):  # Each holds at most its share, and most of it.
    assert 0.1 * total < corpus.num_bytes(split) <= 0.2 * total
  again = text.load_corpus.__wrapped__((root,), 10**6, 0.2, 0.2)
  assert [r for r, _ in again.files['test']] == names['test']


def test_text_windows_cover_each_target_once(text_dir):
  root, _ = text_dir
  context = 16
  corpus = text.load_corpus((root,), 10**6, 0.2, 0.2)
  windows = text.make_windows(context, (root,), 10**6, 0.2, 0.2)
  for split in ('train', 'valid', 'test'):
    expected = [a[k * context:k * context + context + 1]
                for _, a in corpus.files[split] for k in range((a.size - 1) // context)]
    np.testing.assert_array_equal(windows[split]['tokens'], np.stack(expected))
    assert windows[split]['tokens'].dtype == np.uint8


def test_text_byte_budget_and_globs(text_dir):
  root, files = text_dir
  small = text.load_corpus((f'{root}/d0/*.txt', f'{root}/d1/*.txt'), 2000, 0.2, 0.2)
  total = sum(small.num_bytes(s) for s in ('train', 'valid', 'test'))
  assert 1500 < total <= 2000
  rels = [r for s in ('train', 'valid', 'test') for r, _ in small.files[s]]
  assert all(r.startswith(('d0/', 'd1/')) for r in rels)


def test_stdlib_corpus():
  corpus = text.load_corpus((), 1_000_000, 0.1, 0.1)
  sizes = {s: corpus.num_bytes(s) for s in ('train', 'valid', 'test')}
  assert 900_000 < sum(sizes.values()) <= 1_000_000
  assert 0.05 < sizes['valid'] / sum(sizes.values()) <= 0.1
  rels = [r for s in sizes for r, _ in corpus.files[s]]
  assert len(rels) == len(set(rels)) and all(r.endswith('.py') for r in rels)
  assert not any(part in ('site-packages', 'test') for r in rels for part in r.split('/'))
  assert text.parse_paths(' a.txt, b/*.py ,') == ('a.txt', 'b/*.py')
  assert text.parse_paths(['x']) == ('x',) and text.parse_paths('') == ()


def test_text_errors(tmp_path, text_dir):
  root, _ = text_dir
  with pytest.raises(ValueError, match=r"data.paths: '.*nowhere.txt' does not exist"):
    text.load_corpus((str(tmp_path / 'nowhere.txt'),))
  with pytest.raises(ValueError, match=r"data.paths: '.*\*.md' matches no file"):
    text.load_corpus((f'{root}/*.md',))
  empty = tmp_path / 'empty_dir'
  empty.mkdir()
  for i in range(3):
    (empty / f'e{i}.txt').write_bytes(b'')
  with pytest.raises(ValueError, match='data.paths: no text in'):
    text.load_corpus((str(empty),))
  with pytest.raises(ValueError, match='need at least 3 text files'):
    text.load_corpus((f'{root}/d0/f0.txt', f'{root}/d1/f1.txt'))
  with pytest.raises(ValueError, match=r'model.context: 5000 needs files of at least 5001 bytes'):
    text.make_windows(5000, (root,), 10**6, 0.2, 0.2)
  with pytest.raises(ValueError, match='data.byte_budget'):
    text.load_corpus((root,), 10)
