"""LaddConfig: typed defaults carrying the paper's values, TOML and command-line overrides, one-line refusals."""

import tomllib

import pytest

from ladd.cli import LaddError
from ladd.config import LaddConfig, apply_overrides, load_config, parse_value, to_dict
from ladd.paths import CONFIGS_DIR


def test_parse_value_reads_toml_literals():
    assert parse_value("3") == 3 and parse_value("1e-4") == 1e-4 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value('"x"') == "x" and parse_value("plain") == "plain"


def test_overrides_apply_to_nested_keys_and_reject_typos():
    config = {"seed": 0, "teacher": {"depth": 4}}
    assert apply_overrides(config, ["teacher.depth=8", "seed=3"]) == {"seed": 3, "teacher": {"depth": 8}}
    assert config["teacher"]["depth"] == 4  # the original is untouched
    with pytest.raises(LaddError, match="unknown config key 'teacher.dpeth' \\(valid here: depth\\)"):
        apply_overrides(config, ["teacher.dpeth=8"])
    with pytest.raises(LaddError, match="key=value"):
        apply_overrides(config, ["teacher.depth"])


def test_the_defaults_are_the_papers_recipe():
    cfg = LaddConfig()
    assert (cfg.renoise.logit_mean, cfg.renoise.logit_std) == (1.0, 1.0)  # Sec. 4.1
    schedule = cfg.student.schedule()  # Sec. 5
    assert schedule.timesteps == (1.0, 0.75, 0.5, 0.25) and schedule.switch_at == 500
    assert schedule.warmup_probs == (0.0, 0.0, 0.5, 0.5) and schedule.probs == (0.7, 0.1, 0.1, 0.1)
    assert cfg.discriminator.loss == "hinge" and cfg.discriminator.blocks == () and cfg.distill.weight == 0.0
    assert cfg.iterations == 10_000  # Sec. 4


def test_toml_and_overrides_are_typed_and_checked(tmp_path):
    (tmp_path / "run.toml").write_text('iterations = 7\n[student]\ntimesteps = [1, 0.5]\nwarmup_probs = [0, 1]\n'
                                       'probs = [0.5, 0.5]\n')
    cfg = load_config(tmp_path / "run.toml", ["adam_betas=[0, 0.9]", "discriminator.blocks=[0, 2]"])
    assert cfg.iterations == 7 and cfg.student.timesteps == (1.0, 0.5) and cfg.adam_betas == (0.0, 0.9)
    assert cfg.discriminator.blocks == (0, 2) and cfg.student.lr == 1e-4  # untouched keys keep their defaults
    assert to_dict(cfg)["student"]["timesteps"] == [1.0, 0.5]


@pytest.mark.parametrize("toml,overrides,message", [
    ("nope = 1\n", [], "unknown config key 'nope' (valid here: adam_betas"),
    ("[student]\nlearning_rate = 1\n", [], "unknown config key 'student.learning_rate' (valid here: ema_decay, lr"),
    ("", ["iterations=ten"], "iterations must be int, got 'ten'"),
    ("", ["adam_betas=[0.9]"], "adam_betas must be a list of 2"),
    ("", ["student=1"], "is a section"),
    ("student = 1\n", [], "is a section"),
    ("", ["mixed_precision=\"fp16\""], "'fp16' is not supported"),
    ("", ["discriminator.loss=\"wgan\""], "discriminator.loss must be"),
    ("iterations = \n", [], "is not valid TOML"),
])
def test_bad_configs_name_what_is_wrong(tmp_path, toml, overrides, message):
    (tmp_path / "bad.toml").write_text(toml)
    with pytest.raises(LaddError) as error:
        load_config(tmp_path / "bad.toml", overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(LaddError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", ["ladd-smoke.toml", "ladd-shapes.toml"])
def test_committed_configs_hold_only_what_differs_from_the_defaults(name):
    defaults = to_dict(LaddConfig())
    with open(CONFIGS_DIR / name, "rb") as f:
        changes = tomllib.load(f)
    for key, value in changes.items():
        if isinstance(value, dict):
            for leaf, leaf_value in value.items():
                assert defaults[key][leaf] != leaf_value, f"{name}: {key}.{leaf} repeats the default"
        else:
            assert defaults[key] != value, f"{name}: {key} repeats the default"
    load_config(CONFIGS_DIR / name)
