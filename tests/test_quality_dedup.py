"""Vectorised MinHash-LSH: signature agreement tracks Jaccard; clusters find near-duplicates only."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from datasketch import MinHash

from sbs_data.quality.dedup import clusters_from_signatures, lsh_params, near_duplicate_clusters, signatures


def _flat(sets):
    values = np.concatenate([np.array(sorted(s), dtype=np.uint64) for s in sets])
    offsets = np.cumsum([0] + [len(s) for s in sets])
    return values, offsets


def test_signature_agreement_estimates_jaccard_like_datasketch():
    rng = np.random.default_rng(0)
    base = set(rng.integers(0, 2**63, 200).tolist())
    others = [set(list(base)[:k]) | set(rng.integers(0, 2**63, 200 - k).tolist()) for k in (200, 150, 100, 0)]
    values, offsets = _flat([base, *others])
    sig = signatures(values, offsets, num_perm=256)
    for i, o in enumerate(others, start=1):
        true = len(base & o) / len(base | o)
        ours = (sig[0] == sig[i]).mean()
        m1, m2 = MinHash(num_perm=256), MinHash(num_perm=256)
        m1.update_batch([str(x).encode() for x in base])
        m2.update_batch([str(x).encode() for x in o])
        assert abs(ours - true) < 0.1 and abs(m1.jaccard(m2) - true) < 0.1


def test_lsh_params_and_clusters():
    b, r = lsh_params(0.8, 32)
    assert b * r == 32 and 1 - (1 - 0.8**r) ** b > 0.9  # a 0.8 pair is a candidate with high probability
    rng = np.random.default_rng(1)
    base = [set(rng.integers(0, 2**63, 40).tolist()) for _ in range(50)]
    near = set(list(base[0])[:38]) | {1, 2}  # Jaccard 38/42 = 0.90 with base[0]
    far = set(list(base[1])[:20]) | set(range(10, 30))  # 20/60 = 0.33 with base[1]
    values, offsets = _flat([*base, near, far])
    rep, size = clusters_from_signatures(signatures(values, offsets, 32), 0.8)
    assert rep[50] == 0 and size[0] == size[50] == 2
    assert rep[51] == 51 and size[51] == 1 and (size[1:50] == 1).all()


def test_near_duplicate_clusters_from_batches():
    sh = pa.array([[1, 2, 3, 4], [1, 2, 3, 4], [9, 8], [5]], type=pa.list_(pa.uint64()))
    batch = pa.record_batch({"rid": pa.array([10, 11, 12, 13], pa.int64()), "sh": sh})
    t = near_duplicate_clusters([batch.slice(0, 2), batch.slice(2, 2)], threshold=0.8, num_perm=16)
    assert t.column("cluster").to_pylist() == [10, 10, 12, 13]
    assert t.column("size").to_pylist() == [2, 2, 1, 1]
    assert near_duplicate_clusters([], 0.8).num_rows == 0
