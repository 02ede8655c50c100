"""Fuzzy dedup quality on planted near-duplicates of exactly known Jaccard, against the LSH S-curve."""

from __future__ import annotations

import numpy as np
import pytest

from anemone_curator.corpus import near_duplicate_corpus
from anemone_curator.dedup import ExactDedup, FuzzyDedup, candidate_pairs, duplicate_labels, union
from anemone_curator.minhash import jaccard, lsh_probability, shingle_set, signatures


@pytest.fixture(scope="module")
def spread():
    # 1200 planted pairs, 150 per target Jaccard 0.3 .. 1.0, among 1800 unrelated documents.
    return near_duplicate_corpus(3000, n_words=200, dup_fraction=0.4, seed=1)


def _found(labels: np.ndarray, pairs) -> np.ndarray:
    return np.array([labels[p.duplicate] == labels[p.original] for p in pairs])


def test_signature_agreement_estimates_jaccard():
    docs, pairs = near_duplicate_corpus(200, n_words=300, dup_fraction=0.5, seed=2)
    sig = signatures(docs, 256)
    est = np.array([(sig[p.original] == sig[p.duplicate]).mean() for p in pairs])
    true = np.array([p.jaccard for p in pairs])
    assert np.abs(est - true).mean() < 0.03  # 256 permutations: std <= 0.031 per pair
    assert abs(np.mean(est - true)) < 0.01  # unbiased


def test_recall_per_bucket_follows_the_s_curve(spread):
    docs, pairs = spread
    bands, rows = 20, 6
    labels = duplicate_labels(docs, FuzzyDedup(bands=bands, rows=rows, verify=None), shard_size=700)
    found = _found(labels, pairs)
    true = np.array([p.jaccard for p in pairs])
    for lo in np.arange(0.25, 1.0, 0.1):
        sel = (true >= lo) & (true < lo + 0.1 + 1e-9)
        if sel.sum() < 30:
            continue
        expected = float(np.mean(lsh_probability(true[sel], bands, rows)))
        observed = float(found[sel].mean())
        tol = 3 * np.sqrt(max(expected * (1 - expected), 0.01) / sel.sum()) + 0.03
        assert abs(observed - expected) <= tol, (lo, observed, expected, tol)
    # Unrelated documents are never joined.
    originals = {p.original for p in pairs} | {p.duplicate for p in pairs}
    stray = [i for i in range(len(docs)) if i not in originals and labels[i] != i]
    assert not stray


def test_precision_and_recall_above_threshold_with_verification(spread):
    docs, pairs = spread
    threshold = 0.75  # the planted buckets sit at ~0.71 and ~0.79 on either side
    stage = FuzzyDedup(bands=32, rows=8, verify=threshold)
    labels = duplicate_labels(docs, stage, shard_size=1000)
    found = _found(labels, pairs)
    true = np.array([p.jaccard for p in pairs])
    positives = true >= threshold
    tp = int((found & positives).sum())
    fp = int((found & ~positives).sum())
    recall = tp / positives.sum()
    precision = tp / max(1, tp + fp)
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision


def test_default_parameters_on_near_duplicates():
    docs, pairs = near_duplicate_corpus(1500, n_words=300, dup_fraction=0.1, jaccards=(0.8, 0.9, 1.0), seed=3)
    labels = duplicate_labels(docs, FuzzyDedup())
    found = _found(labels, pairs)
    removed = int((labels != np.arange(len(docs))).sum())
    assert found.mean() >= 0.95
    assert found.sum() / removed >= 0.99  # everything removed is a planted duplicate


def test_partitions_and_shards_do_not_change_the_result(spread):
    docs, _ = spread
    docs = docs[:1500]
    a = duplicate_labels(docs, FuzzyDedup(), shard_size=1500)
    b = duplicate_labels(docs, FuzzyDedup(partitions=4), shard_size=333)
    np.testing.assert_array_equal(a, b)


def test_exact_dedup_normalizes_case_and_space():
    texts = ["Hello  World", "hello world", "hello world!", "HELLO WORLD\n", "other"]
    labels = duplicate_labels(texts, ExactDedup())
    assert labels.tolist() == [0, 0, 2, 0, 4]


def test_union_find_components():
    parent = np.arange(8)
    union(parent, np.array([5, 1, 7]), np.array([6, 5, 3]))
    union(parent, np.array([6]), np.array([2]))
    from anemone_curator.dedup import _compress

    _compress(parent)
    assert parent.tolist() == [0, 1, 1, 3, 4, 1, 1, 3]


def test_candidate_pairs_join_to_the_first():
    u, v = candidate_pairs(np.array([9, 4, 9, 4, 1], dtype=np.uint64), np.array([0, 1, 2, 3, 4]))
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(0, 2), (1, 3)]


def test_planted_jaccard_is_exact():
    docs, pairs = near_duplicate_corpus(50, n_words=100, dup_fraction=0.2, seed=4)
    p = pairs[0]
    assert p.jaccard == jaccard(shingle_set(docs[p.original]), shingle_set(docs[p.duplicate]))
