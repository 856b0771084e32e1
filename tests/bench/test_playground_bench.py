"""Keeps `make bench-playground` from rotting: every interaction answers through the real app."""

import math

from bench.playground import measure


def test_every_playground_interaction_is_timed(base_model_dir):
    rows = measure("configs/tiny/label.yaml", [f"sft={base_model_dir}", f"dpo={base_model_dir}"], repeats=2)
    assert [r[0] for r in rows][-1] == "compare sft vs dpo" and len(rows) == 9
    assert all(p50 > 0 for _, p50, _ in rows) and all(p95 >= p50 for _, p50, p95 in rows[1:])
    assert math.isnan(rows[0][2])
