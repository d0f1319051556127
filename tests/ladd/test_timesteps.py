import pytest
import torch

from ladd.timesteps import StudentTimesteps


def test_schedule_switches_at_the_configured_iteration():
    schedule = StudentTimesteps(switch_at=7)
    assert schedule.probabilities(0) == schedule.probabilities(6) == (0.0, 0.0, 0.5, 0.5)
    assert schedule.probabilities(7) == schedule.probabilities(10_000) == (0.7, 0.1, 0.1, 0.1)


def test_samples_follow_the_probabilities():
    schedule = StudentTimesteps(switch_at=500)
    g = torch.Generator().manual_seed(0)
    warm = schedule.sample(40_000, 499, g)
    assert set(warm.unique().tolist()) == {0.25, 0.5}
    assert (warm == 0.5).float().mean().item() == pytest.approx(0.5, abs=0.01)
    late = schedule.sample(40_000, 500, g)
    for t, p in zip(schedule.timesteps, schedule.probs):
        assert (late == t).float().mean().item() == pytest.approx(p, abs=0.01)


def test_paper_defaults_and_sampling_sigmas():
    schedule = StudentTimesteps()
    assert schedule.timesteps == (1.0, 0.75, 0.5, 0.25) and schedule.switch_at == 500
    assert schedule.sigma_table() == {1: [1.0], 2: [1.0, 0.5], 4: [1.0, 0.75, 0.5, 0.25]}


def test_sigmas_follow_the_configured_timesteps():
    assert StudentTimesteps.for_sampling([1.0, 0.5]).sigma_table() == {1: [1.0], 2: [1.0, 0.5]}
    six = StudentTimesteps.for_sampling([1.0, 0.9, 0.7, 0.5, 0.3, 0.1])
    assert six.sampling_steps == (1, 2, 3, 6) and six.sigmas(3) == [1.0, 0.7, 0.3]
    with pytest.raises(ValueError, match="1, 2, 3, 6 steps, not 4"):
        six.sigmas(4)


@pytest.mark.parametrize("kwargs", [{"probs": (0.5, 0.5)}, {"probs": (0.7, 0.1, 0.1, 0.2)},
                                    {"probs": (1.1, -0.1, 0.0, 0.0)}, {"timesteps": (0.9, 0.5, 0.3, 0.1)},
                                    {"timesteps": (1.0, 0.5, 0.5, 0.25)}, {"switch_at": -1}])
def test_bad_schedules_are_rejected(kwargs):
    with pytest.raises(ValueError):
        StudentTimesteps(**kwargs)
