"""Patient-level splits: a patient's images never straddle train and test (DSNet's 4:1 by default),
stratified by the patient's label; and patient-level k-fold."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["patient_split", "patient_kfold"]


def _patients(patient_ids: Sequence[str], labels: Sequence[object]):
    if len(patient_ids) != len(labels):
        raise ValueError(f"patient split: patient_ids and labels differ in length, got {len(patient_ids)} and {len(labels)}")
    if len(patient_ids) == 0:
        raise ValueError("patient split: no samples")
    rows: Dict[str, List[int]] = defaultdict(list)
    for i, p in enumerate(patient_ids):
        if p is None or str(p) == "":
            raise ValueError(f"patient split: sample {i} has no patient id")
        rows[str(p)].append(i)
    # A patient's stratum: its most frequent label (ties: the smallest, for determinism).
    strata = {p: sorted(Counter(str(labels[i]) for i in idx).items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
              for p, idx in rows.items()}
    return rows, strata


def patient_split(patient_ids: Sequence[str], labels: Sequence[object], test_fraction: float = 0.2,
                  seed: int = 0) -> Tuple[List[int], List[int]]:
    """(train indices, test indices), patients assigned whole; within each label stratum
    round(test_fraction * patients) go to test (at least one when the stratum has two or more)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"patient_split: test_fraction must be in (0, 1), got test_fraction={test_fraction}")
    rows, strata = _patients(patient_ids, labels)
    rng = np.random.default_rng(seed)
    test_patients = set()
    for s in sorted(set(strata.values())):
        ps = sorted(p for p in rows if strata[p] == s)
        rng.shuffle(ps)
        k = int(round(test_fraction * len(ps)))
        if len(ps) >= 2:
            k = min(max(k, 1), len(ps) - 1)
        test_patients.update(ps[:k])
    train = sorted(i for p, idx in rows.items() if p not in test_patients for i in idx)
    test = sorted(i for p, idx in rows.items() if p in test_patients for i in idx)
    return train, test


def patient_kfold(patient_ids: Sequence[str], labels: Sequence[object], k: int = 5, seed: int = 0) -> List[Tuple[List[int], List[int]]]:
    """k (train, test) folds; every patient is in exactly one test fold; strata dealt round-robin."""
    rows, strata = _patients(patient_ids, labels)
    if not 2 <= k <= len(rows):
        raise ValueError(f"patient_kfold: k must be between 2 and the number of patients ({len(rows)}), got k={k}")
    rng = np.random.default_rng(seed)
    fold_of: Dict[str, int] = {}
    offset = 0
    for s in sorted(set(strata.values())):
        ps = sorted(p for p in rows if strata[p] == s)
        rng.shuffle(ps)
        for j, p in enumerate(ps):
            fold_of[p] = (j + offset) % k
        offset += len(ps)
    folds = []
    for f in range(k):
        test = sorted(i for p, idx in rows.items() if fold_of[p] == f for i in idx)
        train = sorted(i for p, idx in rows.items() if fold_of[p] != f for i in idx)
        folds.append((train, test))
    return folds
