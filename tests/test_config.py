"""The config tree is strict, typed, and round-trips; every shipped YAML validates."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from hftraining.config import Config, describe_fields, load_config, parse_yaml, to_yaml
from hftraining.errors import UserError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_names_its_command(path):
    config = load_config(path)
    assert isinstance(config, Config)
    assert path.read_text().startswith("# hftrain ")


def test_guide_fields_exist_typed_and_assignable():
    config = Config()
    assert config.data.use_toto_forecasts is True
    assert config.data.toto_model_id == "Datadog/Toto-Open-Base-1.0"
    assert config.data.toto_device == "cuda"
    assert config.data.toto_num_samples == 2048
    config.model.hidden_size = 128
    config.training.learning_rate = 1e-3
    config.profit.transaction_cost_bps = 5
    assert config.profit.transaction_cost_bps == 5.0
    with pytest.raises(ValidationError):
        config.training.learning_rate = "fast"


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    config = load_config(write(tmp_path, "training:\n  learning_rate: 1e-3\n"))
    assert config.training.learning_rate == pytest.approx(0.001)
    assert isinstance(parse_yaml("x: 3E5")["x"], float)


def test_unknown_key_names_dotted_path_and_suggestion(tmp_path):
    with pytest.raises(UserError, match=r"unknown config key 'training.max_step'.*did you mean training.max_steps"):
        load_config(write(tmp_path, "training:\n  max_step: 10\n"))


def test_unknown_override_key_is_refused_with_suggestion():
    with pytest.raises(UserError, match="did you mean training.learning_rate"):
        load_config(None, ["training.learning_rat=0.1"])


def test_wrong_type_names_field_and_value(tmp_path):
    with pytest.raises(UserError, match=r"training.batch_size = 'many'"):
        load_config(write(tmp_path, "training:\n  batch_size: many\n"))


@pytest.mark.parametrize("override", ["training.learning_rate=-0.1", "training.batch_size=0"])
def test_negative_or_zero_values_are_refused(override):
    with pytest.raises(UserError, match=override.split("=")[0]):
        load_config(None, [override])


def test_overrides_apply_after_file(tmp_path):
    path = write(tmp_path, "training:\n  max_steps: 50\n  warmup_steps: 5\n")
    config = load_config(path, ["training.max_steps=100", "data.symbols=[AAPL, MSFT]"])
    assert config.training.max_steps == 100
    assert config.data.symbols == ["AAPL", "MSFT"]


def test_cross_field_rule_is_checked_once():
    with pytest.raises(UserError, match="divisible by model.num_heads"):
        load_config(None, ["model.hidden_size=30", "model.num_heads=4"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    with pytest.raises(UserError, match=r"c.yaml: line \d+, column \d+: YAML syntax error"):
        load_config(write(tmp_path, "training:\n  max_steps: [1, 2\n"))


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, ["training.max_steps=123", "data.start=2010-01-04", "tracker.stop_loss=0.05"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(config))
    assert load_config(path) == config


def test_every_field_has_a_description():
    rows = describe_fields()
    assert len(rows) > 40
    assert all(description for _, _, description in rows)


def test_one_schedule_rule_fits_any_step_count():
    cfg = load_config(None, ["training.warmup_steps=50", "training.eval_every=100", "training.checkpoint_every=100"])
    short = cfg.with_steps(30)
    assert (short.training.max_steps, short.training.warmup_steps, short.training.eval_every,
            short.training.checkpoint_every) == (30, 3, 30, 30)
    assert cfg.with_steps(1000).training.warmup_steps == 50 and cfg.with_steps(1000).training.eval_every == 100
    assert cfg.with_steps(213, evaluations=4).training.eval_every == 54       # at least four validations
    assert cfg.training.max_steps == 600                                      # a copy: the original is untouched


def test_one_cost_a_mismatch_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"profit.transaction_cost_bps \(5\) must equal .* = 10 bps"):
        load_config(None, ["profit.transaction_cost_bps=5"])
    assert load_config(None, ["profit.transaction_cost_bps=5", "tracker.commission=0.0004",
                              "tracker.slippage=0.0001"]).cost_per_turnover == pytest.approx(0.0005)
    cfg = Config()
    cfg.profit.transaction_cost_bps = 5                      # assigned in Python: refused when a run starts
    with pytest.raises(UserError, match="must equal"):
        cfg.check_costs()
    both = Config().with_cost_bps(20)
    assert both.profit.transaction_cost_bps == 20 and both.cost_per_turnover == pytest.approx(0.002)
    assert both.tracker.commission == pytest.approx(0.001)   # split in the configured proportion
