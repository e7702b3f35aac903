"""The client samplers: uniform as it always was, sticky as GlueFL's rule says."""

from __future__ import annotations

import numpy as np
import pytest

from pemn_fl.prototype import derived_seed
from pemn_fl.sampling import RoundSampler

NODES = {p: 100 + p for p in range(20)}


def test_uniform_is_the_seeded_draw_it_always_was() -> None:
    sampler = RoundSampler(NODES, 0.5, seed=7)
    for r in (1, 2, 30):
        rng = np.random.default_rng(derived_seed(7, f"sample/{r}"))
        expected = np.sort(rng.choice(np.arange(20), size=10, replace=False))
        assert sampler(r) == [100 + int(p) for p in expected]


def test_sticky_draws_the_newcomers_from_outside_the_group_and_keeps_its_size() -> None:
    sampler = RoundSampler(NODES, 0.5, seed=3, sampler="sticky")
    assert (sampler.group_size, sampler.change) == (12, 2)
    sampler(1)
    group = set(sampler._group)
    for r in range(2, 40):
        chosen = {n - 100 for n in sampler(r)}
        assert len(chosen) == 10
        assert len(chosen - group) == 2  # exactly the newcomers come from outside
        new_group = set(sampler._group)
        assert len(new_group) == 12 and (chosen - group) <= new_group  # they join it
        assert (group - new_group) <= group - chosen  # only members not sampled leave
        group = new_group


def test_sticky_samples_recent_clients_again_sooner_and_is_a_function_of_the_seed() -> None:
    sticky = RoundSampler(NODES, 0.5, seed=1, sampler="sticky")
    again = RoundSampler(NODES, 0.5, seed=1, sampler="sticky")
    assert again(30) == sticky(30) and again(3) == sticky(3)  # any order, same sample
    uniform = RoundSampler(NODES, 0.5, seed=1)

    def repeat_rate(sampler: RoundSampler) -> float:
        """Share of each round's sample that was also in the previous round's."""
        return float(np.mean([len(set(sampler(r)) & set(sampler(r - 1))) / 10
                              for r in range(2, 200)]))  # fmt: skip

    assert repeat_rate(sticky) > repeat_rate(uniform) + 0.1  # 8 of 12 vs 10 of 20


def test_a_sample_of_everyone_is_everyone_whatever_the_sampler() -> None:
    sampler = RoundSampler(NODES, 1.0, seed=0, sampler="sticky")
    assert sampler(5) == sorted(NODES.values())
    with pytest.raises(ValueError, match="sampler"):
        RoundSampler(NODES, 0.5, seed=0, sampler="greedy")
