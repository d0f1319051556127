import pytest

from ladd.config import apply_overrides, load_config, parse_value


def test_parse_value_reads_toml_literals():
    assert parse_value("3") == 3 and parse_value("1e-4") == 1e-4 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value('"x"') == "x" and parse_value("plain") == "plain"


def test_overrides_apply_to_nested_keys_and_reject_typos():
    config = {"seed": 0, "teacher": {"depth": 4}}
    assert apply_overrides(config, ["teacher.depth=8", "seed=3"]) == {"seed": 3, "teacher": {"depth": 8}}
    assert config["teacher"]["depth"] == 4  # the original is untouched
    with pytest.raises(ValueError, match="unknown config key"):
        apply_overrides(config, ["teacher.dpeth=8"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(config, ["teacher.depth"])


def test_load_config_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.toml")
