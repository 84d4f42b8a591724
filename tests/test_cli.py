"""The ``detr`` command: return codes, files and messages."""

import json

import pytest

from detr.cli import main

TRAIN_FLAGS = [
    "--model-preset",
    "tiny",
    "--recipe",
    "default",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--image-size",
    "128",
    "--max-size",
    "192",
    "--num-workers",
    "0",
    "--lr",
    "1e-3",
]


@pytest.fixture(scope="module")
def trained(shapes_zip, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", str(shapes_zip), "--out", str(out), *TRAIN_FLAGS]) == 0
    return out


def test_train_writes_the_documented_files(trained):
    for name in ("model.pt", "checkpoint.pt", "metrics.jsonl"):
        assert (trained / name).is_file()
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["backbone"] == "resnet18" and config["train"]["image_size"] == 128


def test_eval_prints_json_metrics_on_its_last_line(trained, shapes_zip, capsys, tmp_path):
    assert (
        main(
            [
                "eval",
                "--data",
                str(shapes_zip),
                "--model",
                str(trained / "model.pt"),
                "--split",
                "all",
                "--report",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(last)
    assert {"AP", "AP50", "per_class", "threshold"} <= metrics.keys()
    assert set(metrics["per_class"]) == {"circle", "square", "triangle"}
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()


def test_predict_writes_annotated_images_and_json(trained, shapes_zip, tmp_path, capsys):
    images = sorted((trained / "data" / "extracted" / "images" / "default").glob("*.jpg"))[:3]
    out = tmp_path / "pred"
    assert (
        main(
            ["predict", *map(str, images), "--model", str(trained / "model.pt"), "--out", str(out), "--threshold", "0"]
        )
        == 0
    )
    result = json.loads((out / "predictions.json").read_text())
    assert len(result["images"]) == 3 and result["threshold"] == 0
    # at threshold 0, every query but the duplicates of a better box of its class
    assert all(1 <= len(entry["detections"]) <= 20 for entry in result["images"])
    assert all((out / entry["annotated"]).is_file() for entry in result["images"])


def test_predict_and_eval_take_a_precision(trained, shapes_zip, tmp_path, capsys):
    """fp32 and bf16 both serve: as many detections, and AP50 within 2 points."""
    image = sorted((trained / "data" / "extracted" / "images" / "default").glob("*.jpg"))[0]
    found, metrics = {}, {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        common = ["--model", str(trained / "model.pt"), "--precision", precision]
        assert main(["predict", str(image), *common, "--out", str(out), "--threshold", "0"]) == 0
        found[precision] = json.loads((out / "predictions.json").read_text())["images"][0]["detections"]
        assert main(["eval", "--data", str(shapes_zip), *common, "--split", "all"]) == 0
        metrics[precision] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 1 <= len(found["fp32"]) <= 20 and 1 <= len(found["bf16"]) <= 20
    assert abs(metrics["fp32"]["AP50"] - metrics["bf16"]["AP50"]) <= 0.02
    with pytest.raises(SystemExit):
        main(["predict", str(image), "--model", "m.pt", "--out", "o", "--precision", "fp16"])


def test_resume_extends_a_run(trained, shapes_zip):
    assert main(["train", "--data", str(shapes_zip), "--out", str(trained), "--resume", "--epochs", "2"]) == 0
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_keeps_the_model_of_the_checkpoint(trained, shapes_zip, capsys):
    metrics = (trained / "metrics.jsonl").read_text()
    argv = ["train", "--data", str(shapes_zip), "--out", str(trained), "--resume", "--epochs", "5"]
    assert main([*argv, "--hidden-dim", "64"]) == 1
    assert "model options cannot change on --resume; drop --hidden-dim" in capsys.readouterr().err
    assert (trained / "metrics.jsonl").read_text() == metrics, "refused before any training"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/nonexistent", "--out", "{tmp}/o", "--model-preset", "tiny"], "no such file or folder"),
        (["train", "--data", "{data}", "--out", "{tmp}/o", "--resume"], "training checkpoint not found"),
        (["eval", "--data", "{data}", "--model", "{tmp}/missing.pt"], "model file not found"),
        (["predict", "{tmp}/none.jpg", "--model", "{tmp}/m.pt", "--out", "{tmp}/p"], "no such image file"),
    ],
)
def test_errors_exit_1_with_a_message(argv, message, shapes_zip, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, data=shapes_zip) for a in argv]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "x.jpg", "--model", "m.pt", "--out", "o", "--threshold", "1.5"])
    assert exc.value.code == 2
    assert "must be between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--backbone", "resnet7", "model option 'backbone' must be one of resnet18, resnet34, resnet50, resnet101, "
                              "regnet_x_400mf, regnet_x_800mf, got 'resnet7'"),
    ("--image-size", "5000", "option 'image_size' must be a whole number from 32 to 4096, got 5000"),
    ("--lr", "nan", "option 'lr' must be a finite number from"),
])
def test_train_options_are_refused_as_cvat_detr_refuses_them(flag, value, message, capsys):
    """`detr train` builds its flags from the same options as `cvat-detr train`: same rule, same message."""
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "d", "--out", "o", flag, value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
