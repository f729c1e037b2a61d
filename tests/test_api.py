"""The seed's Python API stays importable, and the config layer never imports torch."""

import subprocess
import sys


def test_guide_api_is_importable():
    from hftraining import BaseModelTrainer, PortfolioRLConfig, ProfitTracker, train_single_stock_with_profit
    from hftraining.base_model_trainer import BaseModelTrainer as Direct
    from hftraining.config import Config
    from hftraining.train_with_profit import train_single_stock_with_profit as direct

    assert BaseModelTrainer is Direct and train_single_stock_with_profit is direct
    for method in ("train_base_model", "finetune_for_stock", "train_pair_portfolio", "run_complete_pipeline"):
        assert callable(getattr(BaseModelTrainer, method))
    tracker = ProfitTracker(initial_capital=50_000, commission=0.001, slippage=0.0005, max_position_size=0.5,
                            stop_loss=0.05, take_profit=0.1)
    assert tracker.cost_rate == 0.0015
    config = Config()
    config.model.hidden_size = 32
    config.training.learning_rate = 1e-3
    config.data.use_toto_forecasts = False
    config.data.toto_model_id = "/models/toto"
    config.data.toto_device = "cpu"
    config.data.toto_horizon = 8
    config.data.toto_num_samples = 256
    config.profit.transaction_cost_bps = 5
    assert isinstance(config.portfolio, PortfolioRLConfig)


def test_config_and_cli_startup_do_not_import_torch():
    code = ("import sys, hftraining, hftraining.config, hftraining.cli; "
            "hftraining.config.load_config(None); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
