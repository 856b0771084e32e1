"""Which item an annotator gets next (pure; the store calls it inside its assignment transaction).

Default: fewest judgments (plus live assignments) first, so overlap fills evenly and agreement can
be measured early. Active sampling (`active=True`): items whose candidates the current reward model
separates least (smallest score margin) come first, since a human label there teaches the reward
model most; items the reward model has not scored follow, fewest judgments first. Ties are broken
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


def spread(salt: int, item_id: int) -> int:
    """A per-annotator pseudo-random order of items."""
    return (item_id * 2654435761 + salt * 40503) % 4294967291


def priority(item: ItemState, active: bool, salt: int) -> tuple:
    """Sort key: smaller comes first."""
    if active:
        unscored = item.margin is None
        return (unscored, 0.0 if unscored else abs(item.margin), item.n_taken, spread(salt, item.item_id))
    return (item.n_taken, spread(salt, item.item_id))


def choose(items: list[ItemState], active: bool = False, salt: int = 0) -> int | None:
    """The id of the item to hand out next, or None when there is none."""
    if not items:
        return None
    return min(items, key=lambda it: priority(it, active, salt)).item_id
