"""The one bounded option schema (``cvat_plugin.training.schema`` over ``detr.config``): every numeric
option has a lowest and a highest value, floats are finite, closed strings have choices, and the
trainer, the gateway and ``cvat-detr`` refuse the same values with the same message, naming the
option, the value and what it takes."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from cvat_plugin import cli
from cvat_plugin.cli import exits
from cvat_plugin.training.options import training_setup
from cvat_plugin.training.schema import OPTIONS, options_json, parse_options
from detr.config import ConfigError, ModelConfig, OptionError, TrainConfig, option_rule, parse_option
from tests.fakes.nuclio import TRAINER_AUTH
from tests.gateway_sandbox import Sandbox, sandbox

BOUNDED = [o for o in OPTIONS if o.kind in ("integer", "number")]
CONFIGS = {"train": TrainConfig, "model": ModelConfig}


def test_every_numeric_option_has_bounds_around_its_default():
    for option in BOUNDED:
        low, high = option.bounds
        default = getattr(CONFIGS[option.section](), option.name) if option.section == "model" else option.default
        assert low <= default <= high and math.isfinite(low) and math.isfinite(high), option.name


def test_every_closed_string_option_has_its_choices():
    closed = {o.name for o in OPTIONS if o.choices}
    assert closed == {"weights", "recipe", "model_preset", "architecture", "backbone", "backbone_norm",
                      "cross_attention", "classifier", "schedule", "precision"}
    assert {o.name for o in OPTIONS if o.kind == "string"} - closed == {"device"}  # 'cuda:N' is open-ended


@pytest.mark.parametrize("option", BOUNDED, ids=[o.name for o in BOUNDED])
def test_each_option_at_its_bounds_and_past_them(option):
    low, high = option.bounds
    whole = option.kind == "integer"
    assert option.parse(low) == low and option.parse(high) == high
    step = 1 if whole else max(abs(high) * 1e-6, 1e-12)
    attacks = [low - step, high + step, 10**400, -(10**400), float("inf"), float("-inf"), float("nan"), True, "1"]
    if whole:
        attacks.append(float(low) + 0.5)
    assert option.rule.startswith("a whole number from " if whole else "a finite number from ")
    for value in attacks:
        with pytest.raises(OptionError) as caught:
            option.parse(value)
        assert str(caught.value) == f"{option.label} must be {option.rule}, got {value!r}"
        if option.section in CONFIGS and not isinstance(value, str):
            config = CONFIGS[option.section]
            assert option_rule(config, option.name) == option.rule
            with pytest.raises(ConfigError, match=f"{option.name}=.* is invalid; must be {option.rule}"):
                config(**{option.name: value})


def test_whole_floats_count_as_whole_numbers():
    assert parse_option(TrainConfig, "epochs", 5.0) == 5 and isinstance(parse_option(TrainConfig, "epochs", 5.0), int)
    assert parse_option(ModelConfig, "num_queries", 1e3) == 1000
    parsed = parse_options({"epochs": 5.0, "model": {"num_queries": 1e3}})
    assert parsed == {"epochs": 5, "model": {"num_queries": 1000}} and isinstance(parsed["epochs"], int)


def test_the_schema_as_json_carries_the_site_defaults_and_the_limits():
    described = {item["name"]: item for item in options_json({"epochs": 30, "model": {"num_queries": 50}})}
    assert described["epochs"] == {"name": "epochs", "section": "train", "type": "integer", "default": 30,
                                   "minimum": 1, "maximum": 10000, "help": "Passes over the training images."}
    assert described["image_size"]["default"] == TrainConfig.image_size
    assert described["num_queries"]["default"] == 50 and described["hidden_dim"]["default"] is None  # the preset's
    assert described["weights"]["choices"] == ["coco", "imagenet", "scratch", "previous"]
    assert (described["val_fraction"]["minimum"], described["val_fraction"]["maximum"]) == (0.01, 0.5)
    assert described["publish"] == {**described["publish"], "type": "boolean", "default": True}
    json.dumps(list(described.values()), allow_nan=False)  # plain JSON


def test_a_large_image_size_alone_brings_a_cap_that_fits():
    """The dialog's image size 1400 is a size `cvat-detr train --image-size 1400` and the trainer take too."""
    assert training_setup({"image_size": 1400}).train_options == {"image_size": 1400, "max_size": 2333}
    assert training_setup({"image_size": 4096}).train_options["max_size"] <= TrainConfig.__dataclass_fields__[
        "max_size"].metadata["bounds"][1]
    assert training_setup({"image_size": 1000}).train_options == {"image_size": 1000}  # the default cap fits
    with pytest.raises(OptionError, match="max_size=1000 is invalid; must be > image_size=1400"):
        training_setup({"image_size": 1400, "max_size": 1000})  # an explicit cap is the caller's


# --- one table of bad values, from the three entry points ----------------------------------------------------

#: (the options as JSON, the same as `cvat-detr train` flags, the one message every entry point gives)
BAD_VALUES: list[tuple[dict[str, Any], list[str], str]] = [
    ({"epochs": 0}, ["--epochs", "0"], "option 'epochs' must be a whole number from 1 to 10000, got 0"),
    ({"epochs": 2.5}, ["--epochs", "2.5"], "option 'epochs' must be a whole number from 1 to 10000, got 2.5"),
    ({"epochs": "ten"}, ["--epochs", "ten"], "option 'epochs' must be a whole number from 1 to 10000, got 'ten'"),
    ({"image_size": 5000}, ["--image-size", "5000"],
     "option 'image_size' must be a whole number from 32 to 4096, got 5000"),
    ({"lr": 2.0}, ["--lr", "2.0"], "option 'lr' must be a finite number from 1e-07 to 1, got 2.0"),
    ({"lr": float("inf")}, ["--lr", "inf"], "option 'lr' must be a finite number from 1e-07 to 1, got inf"),
    ({"weight_decay": float("nan")}, ["--weight-decay", "nan"],
     "option 'weight_decay' must be a finite number from 0 to 1, got nan"),
    ({"batch_size": 10**40}, ["--batch-size", str(10**40)],
     f"option 'batch_size' must be a whole number from 1 to 256, got {10**40}"),
    ({"num_workers": 100000}, ["--num-workers", "100000"],
     "option 'num_workers' must be a whole number from 0 to 64, got 100000"),
    ({"weights": "imagenet21k"}, ["--weights", "imagenet21k"],
     "option 'weights' must be one of coco, imagenet, scratch, previous, got 'imagenet21k'"),
    ({"recipe": "fast"}, ["--recipe", "fast"], "option 'recipe' must be one of auto, default, small-data, got 'fast'"),
    ({"model_preset": "huge"}, ["--model-preset", "huge"],
     "option 'model_preset' must be one of auto, detr-r50, tiny, fast, fast-light, fast-r50, got 'huge'"),
    ({"schedule": "linear"}, ["--schedule", "linear"], "option 'schedule' must be one of step, cosine, got 'linear'"),
    ({"model": {"backbone": "resnet152"}}, ["--backbone", "resnet152"],
     "model option 'backbone' must be one of resnet18, resnet34, resnet50, resnet101, regnet_x_400mf, "
     "regnet_x_800mf, got 'resnet152'"),
    ({"model": {"num_queries": 5000}}, ["--num-queries", "5000"],
     "model option 'num_queries' must be a whole number from 1 to 3000, got 5000"),
    # Values each fine alone, wrong together: checked as the trainer checks them, before any work.
    ({"image_size": 1400, "max_size": 1000}, ["--image-size", "1400", "--max-size", "1000"],
     "train config: max_size=1000 is invalid; must be > image_size=1400 (the longer side's cap; e.g. 2333)"),
    ({"model_preset": "detr-r50", "model": {"backbone": "regnet_x_400mf"}},
     ["--model-preset", "detr-r50", "--backbone", "regnet_x_400mf"],
     "model config: backbone='regnet_x_400mf' is invalid; regnet_x_400mf, regnet_x_800mf need "
     "architecture='fast'; with 'detr' choose one of resnet18, resnet34, resnet50, resnet101"),
]
IDS = [" ".join(flags) for _, flags, _ in BAD_VALUES]


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Iterator[Sandbox]:
    """The gateway and the trainer function over real HTTP, on the fake CVAT."""
    with sandbox(tmp_path_factory.mktemp("sandbox")) as box:
        yield box


def cvat_detr_train(home: Path, *flags: str) -> int:
    """``cvat-detr -q train --local`` of task 1; argparse writes its errors to sys.stderr."""
    return cli.main(["-q", "train", "--task", "1", "--local", "--home", str(home), *flags], stdout=io.StringIO(),
                    stderr=sys.stderr)


def _post(url: str, body: Any, *, headers: dict[str, str], cookies: dict[str, str] | None = None) -> tuple[int, str]:
    # Serialised here: requests refuses NaN and Infinity, which Python's json (and so the gateway's) reads.
    answer = requests.post(url, data=json.dumps(body), cookies=cookies, timeout=30,
                           headers={"Content-Type": "application/json", **headers})
    assert answer.headers["content-type"] == "application/json", answer.text
    return answer.status_code, answer.json()["error"]


@pytest.mark.parametrize(("options", "flags", "message"), BAD_VALUES, ids=IDS)
def test_the_cli_the_gateway_and_the_trainer_refuse_a_bad_value_alike(box, tmp_path, capsys, options, flags,
                                                                       message):
    assert cvat_detr_train(tmp_path, *flags) == exits.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing may be exported or written"

    cookies = box.login(box.alice)
    exports = box.cvat.count("POST", r"/api/tasks/\d+/dataset/export")
    status, error = _post(f"{box.api}/tasks/{box.task.id}/train", options, cookies=cookies,
                          headers={"X-CSRFToken": cookies["csrftoken"]})
    assert (status, error) == (400, message)
    assert box.cvat.count("POST", r"/api/tasks/\d+/dataset/export") == exports, "refused before the export"

    status, error = _post(f"{box.trainer.url}/jobs", {"dataset_id": "task-7", "options": options},
                          headers=TRAINER_AUTH)
    assert (status, error) == (400, message)


def test_the_cli_and_the_gateway_refuse_a_bad_validation_share_alike(box, tmp_path, capsys):
    message = "option 'val_fraction' must be a finite number from 0.01 to 0.5, got 0.9"
    assert cvat_detr_train(tmp_path, "--val-fraction", "0.9") == exits.EXIT_USAGE
    assert message in capsys.readouterr().err
    cookies = box.login(box.alice)
    assert _post(f"{box.api}/tasks/{box.task.id}/train", {"val_fraction": 0.9}, cookies=cookies,
                 headers={"X-CSRFToken": cookies["csrftoken"]}) == (400, message)


def test_an_image_size_of_1400_passes_every_entry_point(box, tmp_path, capsys):
    code = cvat_detr_train(tmp_path, "--image-size", "1400", "--url", "http://127.0.0.1:9", "--retries", "0")
    assert code == exits.EXIT_UNREACHABLE, capsys.readouterr().err  # past the options, at CVAT
    status, error = _post(f"{box.trainer.url}/jobs", {"dataset_id": "no-such-set", "options": {"image_size": 1400}},
                          headers=TRAINER_AUTH)
    assert status == 404 and "dataset 'no-such-set' not found" in error  # past the options, at the dataset
    service = box.gateway.server.config.app.state.service
    assert service.check_options({"image_size": 1400}) == {"image_size": 1400}


def test_cvat_detr_train_help_shows_each_options_range_choices_and_help(capsys):
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--epochs EPOCHS Passes over the training images. (a whole number from 1 to 10000; default: 50)" in text
    assert "--schedule {step,cosine}" in text and "(one of step, cosine; default: step)" in text
    assert "--num-queries NUM_QUERIES" in text and "--num-classes" not in text  # the labels set it


def test_an_unknown_option_is_named_with_the_known_ones():
    with pytest.raises(OptionError, match=r"unknown option 'epoch'; known options: weights, recipe, model_preset, "
                                          r"model, epochs, .*, device, val_fraction, publish$"):
        parse_options({"epoch": 3})
    with pytest.raises(OptionError, match="unknown model option 'num_quries'; known model options: num_classes"):
        parse_options({"model": {"num_quries": 5}})
    with pytest.raises(OptionError, match="option 'model' must be a JSON object of model options"):
        parse_options({"model": [1]})
