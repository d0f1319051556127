"""scripts/ladd_results.py's training-cost rows on the smoke zoo, for the paper's recipe and a guided L_distill."""

from ladd.paths import CONFIGS_DIR
from ladd_results import training_cost


def ratio(lines: list[str]) -> float:
    row = next(line for line in lines if line.startswith("| **ratio**"))
    return float(row.split("**")[3].rstrip("x"))


def test_training_cost_times_the_recipe_it_is_given(smoke_teacher, smoke_latents):
    config = CONFIGS_DIR / "ladd-smoke.toml"
    plain = training_cost(config, smoke_teacher, smoke_latents, batch_size=2, repeats=1)
    guided = training_cost(config, smoke_teacher, smoke_latents, batch_size=2, repeats=1,
                           overrides=["distill.weight=0.2", "distill.guidance_scale=4.0"])
    assert ratio(plain) > 0 and ratio(guided) > 0
    assert not any("L_distill" in line for line in plain)
    assert any("L_distill with the teacher's unconditional forward" in line for line in guided)
