"""deploy/render.py: the checked-in deployment files are exactly its output, its YAML reads back as
written, and a settings file overrides only what it names, checked and bounded."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from deploy import render
from deploy import settings as names
from deploy.yamltext import Item, Key, dump, dump_all, plain, read


def test_every_checked_in_deployment_file_is_the_renderers_output():
    assert render.stale() == [], "run `python3 -m deploy.render` and commit its output"
    assert render.main(["--check"]) == 0


def test_a_hand_edited_file_is_caught(tmp_path, capsys):
    for path in render.render(names.load()):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(render.REPO / path, tmp_path / path)
    assert render.stale(tmp_path) == []
    edited = tmp_path / "deploy/kubernetes/functions/trainer-gpu.yaml"
    edited.write_text(edited.read_text().replace("nvidia.com/gpu: 1", "nvidia.com/gpu: 2"))
    (tmp_path / "serverless/trainer/function.yaml").unlink()
    assert render.stale(tmp_path) == ["serverless/trainer/function.yaml",
                                      "deploy/kubernetes/functions/trainer-gpu.yaml"]


def test_rendered_yaml_reads_back_as_the_data_it_was_written_from():
    data = {
        Key("first", "a comment", "on two lines", gap=True): {"empty": {}, "none": [], "flag": "true", "n": 7},
        "text": "line one\nline two\n",
        "no_newline": "a\nb",
        "kept": "trailing spaces  \n\nand blank lines\n\n",
        "indented": "  first line indented\nsecond\n",
        "leading_newline": "\nafter an empty line",
        "carriage_return": "a\r\nb\n",
        "tab": "a\tb\nc",
        "quoted": ["yes", "on", "No", "y", "12:30", "0777", "0o17", "0x1F", "1_000", ".inf", "null", "~", "=",
                   "1.0", "a: b", "-c", "#c", "a #b", "${X:-1}", "Host(`h`) && PathPrefix(`/p/`)", "", "é",
                   None, False, 1.5],
        Key("items", gap=True): [Item({Key("k", "comment on the first key"): 1, "l": [1, [2, 3]]}, "item comment"),
                                 {"only": "x"}],
    }
    text = dump(data, ["header", "", "more"])
    assert text.startswith("# header\n#\n# more\n\n# a comment\n# on two lines\nfirst:\n")
    # Read back as YAML 1.1 (PyYAML, like Kubernetes and Nuclio) and as YAML 1.2 (ruamel.yaml).
    assert yaml.safe_load(text) == plain(data)
    assert read(text) == plain(data)
    assert "\n\nitems:\n  # item comment\n  -\n    # comment on the first key\n    k: 1\n" in text
    # Quoted where YAML 1.1 (Kubernetes and Nuclio read it, with Go's yaml.v2) reads a bool or a number.
    assert "\n  - 'yes'\n  - 'on'\n  - 'No'\n  - 'y'\n  - '12:30'\n  - '0777'\n" in text
    assert "\n  - null\n" in text


def test_documents_are_separated_and_only_the_first_has_the_header():
    text = dump_all([{Key("a", "about a"): 1}, {"b": [Item(2, "about 2")]}], ["header"])
    assert text == "# header\n# about a\na: 1\n---\nb:\n  # about 2\n  - 2\n"
    assert list(yaml.safe_load_all(text)) == [{"a": 1}, {"b": [2]}]


def test_without_ruamel_yaml_the_renderer_says_what_to_install():
    blocked = ("import runpy, sys; sys.modules['ruamel'] = None; sys.argv = ['render', '--check']; "
               "runpy.run_module('deploy.render', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", blocked], cwd=render.REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr == "deploy/render.py needs the Python package ruamel.yaml: pip install 'ruamel.yaml>=0.19'\n"


def test_a_settings_file_overrides_what_it_names(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("kubernetes:\n  namespace: labelling\n  registry: registry.example.com:5000/detr\n"
                    "  trainer: {gpus: 4, backend: kubeflow}\n  gpu_nodes: {node_selector: {gpu: a100}}\n")
    settings = names.load(path)
    kube = settings["kubernetes"]
    assert kube["namespace"] == "labelling" and kube["trainer"]["gpus"] == 4 and kube["trainer"]["nodes"] == 2
    assert kube["gpu_nodes"]["node_selector"] == {"gpu": "a100"}, "free-form mappings are replaced, not merged"
    assert kube["gpu_nodes"]["tolerations"] == names.DEFAULTS["kubernetes"]["gpu_nodes"]["tolerations"]
    assert names.DEFAULTS["kubernetes"]["namespace"] == "cvat", "the defaults are not changed"
    assert names.image_ref(settings, "cvat.detr.gateway:latest") == \
        "registry.example.com:5000/detr/cvat.detr.gateway:latest"


def test_settings_read_as_yaml_1_2_are_written_for_yaml_1_1_readers(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("kubernetes:\n  ingress: {annotations: {nginx.ingress.kubernetes.io/proxy-buffering: on}}\n"
                    "  gpu_nodes: {node_selector: {gpu: yes}}\n")
    out = tmp_path / "out"
    assert render.main(["--settings", str(path), "--out", str(out)]) == 0
    gateway = (out / "manifests/gateway.yaml").read_text()
    assert "nginx.ingress.kubernetes.io/proxy-buffering: 'on'\n" in gateway
    ingress = list(yaml.safe_load_all(gateway))[2]
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-buffering": "on"}
    trainer = yaml.safe_load((out / "functions/trainer-gpu.yaml").read_text())
    assert trainer["spec"]["nodeSelector"] == {"gpu": "yes"}


@pytest.mark.parametrize("text, message", [
    ("kubernetes: {namespce: x}", "unknown setting 'kubernetes.namespce'; known settings here: kubernetes.namespace"),
    ("kubernetes: {trainer: {gpus: 0}}", "'kubernetes.trainer.gpus' must be a GPU count, 1 to 16; got 0"),
    ("kubernetes: {trainer: {gpus: 64}}", "'kubernetes.trainer.gpus' must be a GPU count, 1 to 16; got 64"),
    ("kubernetes: {trainer: {gpus: '2'}}", "'kubernetes.trainer.gpus' must be a int like 1; got '2'"),
    ("kubernetes: {trainer: {processes: '0'}}", "'kubernetes.trainer.processes' must be auto"),
    ("kubernetes: {namespace: CVAT}", "'kubernetes.namespace' must be a Kubernetes namespace"),
    ("kubernetes: {registry: 'https://r.example.com'}", "'kubernetes.registry' must be a registry"),
    ("kubernetes: {storage: {size: lots}}", "'kubernetes.storage.size' must be a Kubernetes quantity"),
    ("kubernetes: {gateway_ip: 10.0.0.300}", "'kubernetes.gateway_ip' must be an IPv4 address"),
    ("kubernetes: 3", "'kubernetes' is a mapping of namespace, cvat_release"),
    ("- a list", "a settings file is a mapping of settings to override"),
])
def test_wrong_settings_are_named_with_what_is_expected(tmp_path, text, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(names.SettingsError, match=r"^" + str(path).replace(".", r"\.") + ": .*") as caught:
        names.load(path)
    assert message in str(caught.value)


def test_out_renders_the_kubernetes_files_for_one_cluster(tmp_path, capsys):
    path = tmp_path / "cluster.yaml"
    path.write_text("kubernetes: {namespace: labelling, registry: r.example.com/detr, trainer: {gpus: 4}}\n")
    out = tmp_path / "out"
    assert render.main(["--settings", str(path), "--out", str(out)]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "cvat-values.yaml", "deploy.env", "functions/detector-gpu.yaml", "functions/detector.yaml",
        "functions/trainer-gpu.yaml", "functions/trainer.yaml", "manifests/gateway.yaml", "manifests/storage.yaml",
        "manifests/trainer-rbac.yaml"]
    trainer = yaml.safe_load((out / "functions/trainer-gpu.yaml").read_text())
    assert trainer["metadata"]["namespace"] == "labelling"
    assert trainer["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 4
    env = {item["name"]: item.get("value") for item in trainer["spec"]["env"]}
    assert env["DETR_KUBE_IMAGE"] == "r.example.com/detr/cvat.detr.trainer:latest-gpu"
    assert "k8s_registry=r.example.com/detr\n" in (out / "deploy.env").read_text()
    assert render.stale() == [], "the repository keeps the rendering of the defaults"

    assert render.main(["--settings", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    assert "cannot read the settings file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        render.main(["--settings", str(path)])
    assert "--settings needs --out" in capsys.readouterr().err
