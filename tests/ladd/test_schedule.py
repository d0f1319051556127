import pytest
import torch

from ladd.schedule import StudentTimestepSchedule


def test_schedule_switches_at_the_configured_iteration():
    schedule = StudentTimestepSchedule(switch_at=7)
    assert schedule.probabilities(0) == schedule.probabilities(6) == (0.0, 0.0, 0.5, 0.5)
    assert schedule.probabilities(7) == schedule.probabilities(10_000) == (0.7, 0.1, 0.1, 0.1)


def test_samples_follow_the_probabilities():
    schedule = StudentTimestepSchedule(switch_at=500)
    g = torch.Generator().manual_seed(0)
    warm = schedule.sample(40_000, 499, g)
    assert set(warm.unique().tolist()) == {0.25, 0.5}
    assert (warm == 0.5).float().mean().item() == pytest.approx(0.5, abs=0.01)
    late = schedule.sample(40_000, 500, g)
    for t, p in zip(schedule.timesteps, schedule.probs):
        assert (late == t).float().mean().item() == pytest.approx(p, abs=0.01)


def test_paper_defaults():
    schedule = StudentTimestepSchedule()
    assert schedule.timesteps == (1.0, 0.75, 0.5, 0.25) and schedule.switch_at == 500


@pytest.mark.parametrize("probs", [(0.5, 0.5), (0.7, 0.1, 0.1, 0.2), (1.1, -0.1, 0.0, 0.0)])
def test_bad_probabilities_are_rejected(probs):
    with pytest.raises(ValueError):
        StudentTimestepSchedule(probs=probs)
