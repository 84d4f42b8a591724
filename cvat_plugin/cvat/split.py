"""How a training set is split into train and validation images.

In CVAT a task has one subset, and subsets split a project's tasks: an image's subset is its
task's. Subsets named Train / Validation (any case; also ``val``) decide where their images go,
and a ``Test`` subset is held out of both. Images without such a subset follow a seeded split
stratified by each image's rarest label, which keeps every label represented in validation as
far as the data allows.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Optional, Sequence

#: CVAT subset names (any case) and their role.
TRAIN_SUBSETS = ("train", "training")
VALIDATION_SUBSETS = ("validation", "val", "valid")
TEST_SUBSETS = ("test", "testing")
#: What ``split_by_subsets`` says decided the split.
SPLIT_METHODS = ("subsets", "stratified", "subsets+stratified")


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


def subset_role(subset: Optional[str]) -> Optional[str]:
    """"train", "val" or "test" for a CVAT subset name (any case); None for no subset or any other name."""
    name = (subset or "").strip().lower()
    for role, names in (("train", TRAIN_SUBSETS), ("val", VALIDATION_SUBSETS), ("test", TEST_SUBSETS)):
        if name in names:
            return role
    return None


def split_by_subsets(roles: Sequence[Optional[str]], label_sets: Sequence[frozenset], val_fraction: float,
                     seed: int) -> tuple[list[Optional[bool]], str]:
    """Per image True (validation), False (training) or None (held out: a test subset), from each
    image's ``subset_role``, and the method in ``SPLIT_METHODS``.

    Train and Validation subsets place their images; the others are split by ``stratified_split``, as
    are all images when they share one subset.
    Without any validation image that way, every image not held out is split by ``stratified_split``
    (never train = val). ``ValueError`` says what to change in CVAT when no split is possible."""
    if len(set(roles)) == 1:  # one subset (a single task's, say) cannot split anything
        roles = [None] * len(roles)
    is_val: list[Optional[bool]] = [{"train": False, "val": True}.get(role) for role in roles]
    free = [i for i, role in enumerate(roles) if role not in ("train", "val", "test")]
    if not any(role == "train" for role in roles) and not free:
        raise ValueError("every image is in a Validation or Test subset, none is left for training: put some "
                         "tasks in the Train subset (or none) in CVAT")
    has_val = any(role == "val" for role in roles)
    if has_val and len(free) == 1:
        is_val[free[0]] = False
    elif (has_val and free) or len(free) >= 2:
        for index, val in zip(free, stratified_split([label_sets[i] for i in free], val_fraction, seed)):
            is_val[index] = val
    elif not has_val:  # no validation images and too few others: the training subset gives some
        free = [i for i, role in enumerate(roles) if role != "test"]
        for index, val in zip(free, stratified_split([label_sets[i] for i in free], val_fraction, seed)):
            is_val[index] = val
        return is_val, "stratified"
    decided = [role in ("train", "val") for role in roles if role != "test"]
    method = "subsets" if all(decided) else "stratified" if not any(decided) else "subsets+stratified"
    return is_val, method
