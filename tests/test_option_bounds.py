"""The one bounded option schema (``detr.config``): every numeric option of the model and the
training has a lowest and a highest value, floats are finite, and ``cvat-detr`` refuses what the
trainer and the gateway refuse, naming the option and its range."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest

from cvat_plugin import cli
from cvat_plugin.cli import exits
from detr.config import ConfigError, ModelConfig, TrainConfig, option_rule, parse_option

BOUNDED = [(config, f) for config in (ModelConfig, TrainConfig) for f in dataclasses.fields(config)
           if isinstance(f.default, (int, float)) and not isinstance(f.default, bool)]


def test_every_numeric_option_has_bounds_around_its_default():
    for config, f in BOUNDED:
        low, high = f.metadata["bounds"]
        assert low <= f.default <= high and math.isfinite(low) and math.isfinite(high), f.name


@pytest.mark.parametrize(("config", "f"), BOUNDED, ids=[f.name for _, f in BOUNDED])
def test_each_option_at_its_bounds_and_past_them(config, f):
    low, high = f.metadata["bounds"]
    whole = isinstance(f.default, int)
    assert parse_option(config, f.name, low) == low and parse_option(config, f.name, high) == high
    step = 1 if whole else max(abs(high) * 1e-6, 1e-12)
    attacks = [low - step, high + step, 10**400, -(10**400), float("inf"), float("-inf"), float("nan"), True, "1"]
    if whole:
        attacks.append(float(low) + 0.5)
    rule = option_rule(config, f.name)
    assert rule.startswith("a whole number from " if whole else "a finite number from ")
    for value in attacks:
        with pytest.raises(ConfigError) as caught:
            parse_option(config, f.name, value)
        assert str(caught.value) == f"{f.name!r} must be {rule}, got {value!r}"
        if not isinstance(value, str):
            with pytest.raises(ConfigError, match=f"{f.name}=.* is invalid; must be {rule}"):
                config(**{f.name: value})


def test_whole_floats_count_as_whole_numbers():
    assert parse_option(TrainConfig, "epochs", 5.0) == 5 and isinstance(parse_option(TrainConfig, "epochs", 5.0), int)
    assert parse_option(ModelConfig, "num_queries", 1e3) == 1000


@pytest.mark.parametrize(("flags", "message"), [
    (["--epochs", "100000"], "epochs=100000 is invalid; must be a whole number from 1 to 10000"),
    (["--lr", "inf"], "lr=inf is invalid; must be a finite number from 1e-07 to 1"),
    (["--lr", "nan"], "lr=nan is invalid; must be a finite number"),
    (["--num-workers", "100000"], "num_workers=100000 is invalid; must be a whole number from 0 to 64"),
    (["--batch-size", str(10**40)], "batch_size=" + str(10**40) + " is invalid; must be a whole number from 1 to 256"),
    (["--num-queries", "1000000000"], "num_queries=1000000000 is invalid; must be a whole number from 1 to 3000"),
])
def test_cvat_detr_train_refuses_out_of_range_options_before_any_work(tmp_path, flags, message):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["-q", "train", "--task", "1", "--local", "--home", str(tmp_path), *flags], stdout=out, stderr=err)
    assert code == exits.EXIT_USAGE and message in err.getvalue()
    assert not any(tmp_path.iterdir()), "nothing may be exported or written"


def test_the_gateway_reads_the_schema_without_importing_torch():
    import subprocess
    import sys

    code = "import sys, cvat_plugin.gateway.app, cvat_plugin.gateway.settings; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
