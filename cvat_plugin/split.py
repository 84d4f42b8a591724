"""How a training set is split into train and validation images.

CVAT subsets decide when the task has a validation (or test) subset besides a training one;
otherwise a seeded split stratified by each image's rarest label keeps every label represented
in validation as far as the data allows.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Iterable, Optional, Sequence

#: CVAT subset names (any case) that mean "validation"; "test" is used when no validation subset exists.
VALIDATION_SUBSETS = ("validation", "val", "valid")
TEST_SUBSETS = ("test", "testing")


def stratified_split(label_sets: Sequence[frozenset], val_fraction: float, seed: int) -> list[bool]:
    """Seeded split of images into train/val (True = val), stratified by each image's rarest
    label (images without boxes form their own stratum). Gives ``round(n * val_fraction)``
    validation images, at least 1, and leaves at least 1 for training."""
    n = len(label_sets)
    if n < 2:
        raise ValueError(f"a train/validation split needs at least 2 images, the task has {n}; "
                           f"add frames in CVAT")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    frequency = Counter(label for labels in label_sets for label in labels)
    strata: dict[int, list[int]] = defaultdict(list)
    for index, labels in enumerate(label_sets):
        rarest = min(labels, key=lambda label: (frequency[label], label)) if labels else -1
        strata[rarest].append(index)
    keys = sorted(strata)
    exact = {key: len(strata[key]) * n_val / n for key in keys}
    quota = {key: math.floor(exact[key]) for key in keys}
    # Largest remainder; images with boxes first, then smaller strata (rare labels get a validation image).
    order = sorted(keys, key=lambda k: (k == -1, -(exact[k] - quota[k]), len(strata[k]), k))
    for key in order[:n_val - sum(quota.values())]:
        quota[key] += 1
    rng = random.Random(seed)
    is_val = [False] * n
    for key in keys:
        members = list(strata[key])
        rng.shuffle(members)
        for index in members[:quota[key]]:
            is_val[index] = True
    return is_val


def subset_roles(subsets: Iterable[str]) -> Optional[dict[str, str]]:
    """Map CVAT subset names to "train"/"val" when they name a validation (or test) subset
    besides a training one; None when the subsets cannot give a split."""
    subsets = sorted(set(subsets))
    val = [s for s in subsets if s.lower() in VALIDATION_SUBSETS] or [s for s in subsets if s.lower() in TEST_SUBSETS]
    if not val or len(val) == len(subsets):
        return None
    return {s: ("val" if s in val else "train") for s in subsets}
