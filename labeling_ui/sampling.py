"""Which item an annotator gets next (pure; the store calls it inside its assignment transaction).

Default: fewest judgments (plus live assignments) first, so overlap fills evenly and agreement can
be measured early. Active sampling (`active=True`): when an ensemble of reward models scored the items,
those its members disagree on most come first (the model is unsure, and a label resolves it); else those
the reward model separates least (smallest score margin). `make bench-active` measured why the ensemble
comes first: with noisy annotators, smallest-margin items are mostly near-ties whose labels are coin
flips, and that order needed ~4x the labels random order needed to reach 80 %; disagreement needed about
as many as random (1.1x) and ended higher.
Items the reward model has not scored follow, fewest judgments first. Ties are broken
by a per-annotator pseudo-random order, so concurrent annotators spread over items instead of
colliding on the same one, and the order is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ItemState:
    item_id: int
    n_taken: int                 # judgments + other annotators' live assignments
    margin: float | None = None  # reward-model score gap between its closest candidates; None = not scored
    disagreement: float | None = None  # spread of an ensemble's margins; None = scored by one model or none


def spread(salt: int, item_id: int) -> int:
    """A per-annotator pseudo-random order of items."""
    return (item_id * 2654435761 + salt * 40503) % 4294967291


def priority(item: ItemState, active: bool, salt: int) -> tuple:
    """Sort key: smaller comes first."""
    if active:
        if item.disagreement is not None:
            return (0, -item.disagreement, item.n_taken, spread(salt, item.item_id))
        if item.margin is not None:
            return (1, abs(item.margin), item.n_taken, spread(salt, item.item_id))
        return (2, 0.0, item.n_taken, spread(salt, item.item_id))
    return (item.n_taken, spread(salt, item.item_id))


def choose(items: list[ItemState], active: bool = False, salt: int = 0) -> int | None:
    """The id of the item to hand out next, or None when there is none."""
    if not items:
        return None
    return min(items, key=lambda it: priority(it, active, salt)).item_id
