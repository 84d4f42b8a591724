"""deploy/: the script's syntax and the commands it runs (against stand-in nuctl and docker), and
that the compose override, the Dockerfile and the function configs agree on paths, ports and names."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from cvat_plugin.gateway.app import API_PREFIX, DEFAULT_PORT

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SCRIPT = DEPLOY / "deploy.sh"
SHARED = "/var/lib/detr"

#: Stand-ins that log their command lines; `nuctl get project` says "not found", `docker ps` names the trainer.
FAKE_NUCTL = """#!/usr/bin/env bash
echo "nuctl $*" >> "$TOOL_LOG"
[ "$1 $2" = "get project" ] && exit 1
exit 0
"""
FAKE_DOCKER = """#!/usr/bin/env bash
echo "docker $*" >> "$TOOL_LOG"
[ "$1" = "ps" ] && echo nuclio-nuclio-detr-trainer
exit 0
"""
#: kubectl: namespace "cvat" exists (others do not), the gateway's Service has an address, `apply -f -`
#: records what it was given.
FAKE_KUBECTL = """#!/usr/bin/env bash
echo "kubectl $*" >> "$TOOL_LOG"
case "$1 $2" in
    "get namespace") [ "$3" = cvat ] ;;
    "get service") printf 10.96.0.42 ;;
    "create secret") echo "kind: Secret (from $*)" ;;
    "apply -f") cat >> "$TOOL_LOG" ;;
esac
"""
#: python3 that runs the renderer with this test's interpreter (which has ruamel.yaml), or the same
#: interpreter without its site-packages, so without ruamel.yaml.
FAKE_PYTHON = f"""#!/usr/bin/env bash
exec {sys.executable} "$@"
"""
PYTHON_WITHOUT_RUAMEL = f"""#!/usr/bin/env bash
exec {sys.executable} -S "$@"
"""
TOOLS = {"nuctl": FAKE_NUCTL, "docker": FAKE_DOCKER, "kubectl": FAKE_KUBECTL, "python3": FAKE_PYTHON}
#: The system's commands the script may find, without the tools it drives: only stand-ins ever run.
_SYSTEM_BIN: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _system_bin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("system-bin")
    for directory in (Path("/usr/bin"), Path("/bin")):
        for command in directory.iterdir():
            hidden = command.name in ("kubectl", "nuctl", "docker", "helm") or command.name.startswith("python")
            if not hidden and not (folder / command.name).exists():
                (folder / command.name).symlink_to(command)
    _SYSTEM_BIN[:] = [folder]


def run_script(tmp_path: Path, *args: str, tools: tuple[str, ...] = ("nuctl", "docker"),
               env: dict[str, str] | None = None, fakes: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in {**TOOLS, **(fakes or {})}.items():
        if name in tools:
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
    log = tmp_path / "tools.log"
    log.write_text("")
    # Only the stand-ins and the basic utilities: no real docker, nuctl or kubectl is ever run.
    path = os.pathsep.join([str(bin_dir), *map(str, _SYSTEM_BIN)])
    env = {"PATH": path, "TOOL_LOG": str(log), "HOME": str(tmp_path), **(env or {})}
    result = subprocess.run(["bash", str(SCRIPT), *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=60)
    return result.returncode, result.stdout, log.read_text().splitlines()


def test_the_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True).returncode == 0
    assert os.access(SCRIPT, os.X_OK)
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck:
        # -x: follow the names it sources from deploy.env
        result = subprocess.run([shellcheck, "-x", str(SCRIPT)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("device, detector, trainer", [
    ("cpu", "function.yaml", "serverless/trainer/function.yaml"),
    ("gpu", "serverless/detector/function-gpu.yaml", "serverless/trainer/function-gpu.yaml"),
])
def test_functions_deploy_as_cvats_scripts_do(tmp_path, device, detector, trainer):
    code, output, commands = run_script(tmp_path, device)

    assert code == 0, output
    network = '{"attributes": {"network": "cvat_cvat"}}'
    assert commands[:2] == ["docker network inspect cvat_cvat", "nuctl get project cvat --platform local"]
    assert "nuctl create project cvat --platform local" in commands
    assert "nuctl create project detr --platform local" in commands
    assert f"nuctl deploy --project-name cvat --path {REPO} --file {REPO}/{detector} --platform local " \
           f"--platform-config {network}" in commands
    token = (tmp_path / ".config" / "cvat-detr" / "trainer-token").read_text()
    assert f"nuctl deploy --project-name detr --path {REPO} --file {REPO}/{trainer} --platform local " \
           f"--platform-config {network} --env DETR_TRAINER_TOKEN={token}" in commands
    assert "nuctl get function --platform local" in commands
    assert "the gateway's DETR_TRAINER_URL is http://nuclio-nuclio-detr-trainer:8080" in output
    for config in (detector, trainer):
        assert (REPO / config).is_file()


def test_the_trainer_token_is_generated_once_and_given_to_the_trainer_and_the_gateway_only(tmp_path):
    cvat = tmp_path / "cvat"
    cvat.mkdir()
    (cvat / "Dockerfile.ui").write_text("FROM scratch\n")
    (cvat / ".env").write_text("CVAT_HOST=example.org\nDETR_TRAINER_TOKEN=stale\n")

    code, output, first = run_script(tmp_path, "cpu", str(cvat))
    assert code == 0, output
    token_file = tmp_path / ".config" / "cvat-detr" / "trainer-token"
    token = token_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", token) and token_file.stat().st_mode & 0o077 == 0
    deploys = [command for command in first if command.startswith("nuctl deploy")]
    assert [token in command for command in deploys] == [False, True], "the detector never gets the token"
    assert (cvat / ".env").read_text() == f"CVAT_HOST=example.org\nDETR_TRAINER_TOKEN={token}\n"
    assert (cvat / ".env").stat().st_mode & 0o077 == 0
    assert token not in output, "the token is not printed"

    code, output, second = run_script(tmp_path, "gpu", str(cvat))
    assert code == 0 and token_file.read_text() == token, "generated once, kept across deploys"
    assert any(command.endswith(f"--env DETR_TRAINER_TOKEN={token}") for command in second)
    assert (cvat / ".env").read_text().count("DETR_TRAINER_TOKEN=") == 1
    gateway = _compose()["services"]["detr_gateway"]
    assert gateway["environment"]["DETR_TRAINER_TOKEN"].startswith("${DETR_TRAINER_TOKEN:?")


def test_with_a_cvat_checkout_it_builds_the_ui_with_the_plugin_and_the_gateway(tmp_path):
    cvat = tmp_path / "cvat"
    (cvat / "cvat-ui" / "plugins" / "detr" / "src" / "ts").mkdir(parents=True)
    (cvat / "cvat-ui" / "plugins" / "detr" / "src" / "ts" / "stale.tsx").write_text("old")
    (cvat / "Dockerfile.ui").write_text("FROM scratch\n")

    code, output, commands = run_script(tmp_path, "cpu", str(cvat))

    assert code == 0, output
    plugin = cvat / "cvat-ui" / "plugins" / "detr" / "src" / "ts"
    assert sorted(p.name for p in plugin.iterdir()) == sorted(
        p.name for p in (REPO / "cvat_plugin" / "ui" / "src" / "ts").iterdir())
    assert f"docker build -f {cvat}/Dockerfile.ui --build-arg CLIENT_PLUGINS=plugins/detr -t cvat/ui:dev-detr " \
           f"{cvat}" in commands
    assert f"docker build -f {REPO}/deploy/Dockerfile.gateway -t cvat.detr.gateway:latest {REPO}" in commands
    assert f"-f {REPO}/deploy/docker-compose.detr.yml up -d" in output


@pytest.mark.parametrize("args, tools, code, message", [
    ((), ("nuctl", "docker"), 2, "usage: "),
    (("tpu",), ("nuctl", "docker"), 2, "usage: "),
    (("cpu",), ("docker",), 1, "nuctl is not installed: download the release matching CVAT's Nuclio dashboard"),
    (("cpu", "/nonexistent"), ("nuctl", "docker"), 1, "/nonexistent is not a CVAT checkout (no Dockerfile.ui there)"),
])
def test_wrong_use_is_explained(tmp_path, args, tools, code, message):
    returncode, output, commands = run_script(tmp_path, *args, tools=tools)
    assert returncode == code and message in output
    assert not [command for command in commands if command.startswith("nuctl deploy")]


K8S_TOOLS = ("nuctl", "docker", "kubectl", "python3")


def k8s_settings(tmp_path: Path, text: str = "kubernetes: {registry: registry.example.com/detr}\n") -> dict[str, str]:
    (tmp_path / "cluster.yaml").write_text(text)
    return {"DETR_K8S_SETTINGS": str(tmp_path / "cluster.yaml"), "DETR_K8S_DIR": str(tmp_path / "k8s")}


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_k8s_deploys_into_cvats_namespace_with_the_token_in_a_secret(tmp_path, device):
    cvat = tmp_path / "cvat"
    (cvat / "cvat-ui" / "plugins").mkdir(parents=True)
    (cvat / "Dockerfile.ui").write_text("FROM scratch\n")
    code, output, commands = run_script(tmp_path, "k8s", device, str(cvat), tools=K8S_TOOLS, env=k8s_settings(tmp_path))

    assert code == 0, output
    out, registry, variant = tmp_path / "k8s", "registry.example.com/detr", "-gpu" if device == "gpu" else ""
    trainer = yaml.safe_load((out / f"functions/trainer{variant}.yaml").read_text())
    image = {"name": "DETR_KUBE_IMAGE", "value": f"{registry}/cvat.detr.trainer:latest{variant}"}
    assert image in trainer["spec"]["env"], "the image nuctl pushes"
    token_file = tmp_path / ".config" / "cvat-detr" / "trainer-token"
    token = token_file.read_text()
    kube = "--platform kube --namespace cvat"
    expected = [
        "kubectl get namespace cvat",
        f"kubectl create secret generic detr-trainer-token --namespace cvat --from-file=token={token_file} "
        f"--dry-run=client -o yaml",
        f"docker build -f {REPO}/deploy/Dockerfile.gateway -t {registry}/cvat.detr.gateway:latest {REPO}",
        f"docker push {registry}/cvat.detr.gateway:latest",
        f"kubectl apply --namespace cvat -f {out}/manifests/",
        f"nuctl get project cvat {kube}", f"nuctl create project cvat {kube}",
        f"nuctl get project detr {kube}", f"nuctl create project detr {kube}",
        f"nuctl deploy --project-name cvat --path {REPO} --file {out}/functions/detector{variant}.yaml {kube} "
        f"--registry {registry}",
        f"nuctl deploy --project-name detr --path {REPO} --file {out}/functions/trainer{variant}.yaml {kube} "
        f"--registry {registry}",
        f"nuctl get function {kube}",
        f"docker build -f {cvat}/Dockerfile.ui --build-arg CLIENT_PLUGINS=plugins/detr "
        f"-t {registry}/cvat/ui:v2.42.0-detr {cvat}",
        f"docker push {registry}/cvat/ui:v2.42.0-detr",
        "kubectl get service detr-gateway --namespace cvat -o jsonpath={.spec.clusterIP}",
    ]
    # `kubectl create secret ... | kubectl apply -f -` run at once: their order in the log varies.
    assert [command for command in commands if command.split()[0] in ("kubectl", "nuctl", "docker")
            and command != "kubectl apply -f -"] == expected
    assert "kubectl apply -f -" in commands[1:3]
    assert "kind: Secret (from create secret generic detr-trainer-token" in "\n".join(commands)
    assert token not in "\n".join(commands) and token not in output, "the token goes by file, never on a command line"
    assert (cvat / "cvat-ui/plugins/detr/src/ts/index.tsx").is_file() and not (cvat / ".env").exists()
    assert f"--reuse-values \\\n    -f {out}/cvat-values.yaml" in output
    assert "smokescreen.opts=--allow-address=10.96.0.42" in output


def test_k8s_renders_the_clusters_settings(tmp_path):
    settings = k8s_settings(tmp_path, "kubernetes: {namespace: cvat, registry: r.example.com, run_registry: "
                                      "registry.internal:5000, trainer: {gpus: 4}}\n")
    code, output, commands = run_script(tmp_path, "k8s", "gpu", tools=K8S_TOOLS, env=settings)

    assert code == 0, output
    trainer = yaml.safe_load((tmp_path / "k8s/functions/trainer-gpu.yaml").read_text())
    assert trainer["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 4
    deploys = [command for command in commands if command.startswith("nuctl deploy")]
    assert len(deploys) == 2 and all(c.endswith("--registry r.example.com --run-registry registry.internal:5000")
                                     for c in deploys)
    assert not any("Dockerfile.ui" in command for command in commands), "the UI image needs CVAT_DIR"


@pytest.mark.parametrize("tools, settings, fakes, message", [
    (K8S_TOOLS, "kubernetes: {namespace: cvat}\n", {}, "no image registry: set kubernetes.registry in a settings file"),
    (K8S_TOOLS, "kubernetes: {namespace: other, registry: r.example.com}\n", {},
     "namespace other not found: install CVAT's Helm chart there first"),
    (K8S_TOOLS, "kubernetes: {trainer: {gpus: 99}}\n", {}, "'kubernetes.trainer.gpus' must be a GPU count, 1 to 16"),
    (("nuctl", "docker", "python3"), "", {}, "kubectl is not installed"),
    (K8S_TOOLS, "", {"python3": PYTHON_WITHOUT_RUAMEL}, "python3 with ruamel.yaml is needed to render the Kubernetes"),
    (("docker", "kubectl", "python3"), "", {}, "nuctl is not installed: download the release matching CVAT's Nuclio"),
])
def test_k8s_wrong_setup_is_explained(tmp_path, tools, settings, fakes, message):
    code, output, commands = run_script(tmp_path, "k8s", "gpu", tools=tools, env=k8s_settings(tmp_path, settings),
                                        fakes=fakes)
    assert code == 1 and message in output, output
    assert not [command for command in commands if command.split()[:2] in (["nuctl", "deploy"], ["kubectl", "apply"])]


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.detr.yml").read_text())


def test_the_compose_override_routes_detr_to_the_gateway():
    gateway = _compose()["services"]["detr_gateway"]
    labels = gateway["labels"]
    assert labels["traefik.enable"] == "true"
    assert labels["traefik.http.routers.detr.rule"] == "Host(`${CVAT_HOST:-localhost}`) && PathPrefix(`/detr/`)"
    assert API_PREFIX.startswith("/detr/")
    assert labels["traefik.http.services.detr.loadbalancer.server.port"] == str(DEFAULT_PORT)
    assert labels["traefik.http.routers.detr.entrypoints"] == "web"
    https = yaml.safe_load((DEPLOY / "docker-compose.detr.https.yml").read_text())
    assert https["services"]["detr_gateway"]["labels"]["traefik.http.routers.detr.entrypoints"] == "websecure"
    assert gateway["environment"]["CVAT_URL"] == "http://cvat_server:8080"
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile.gateway"
    assert (REPO / gateway["build"]["dockerfile"]).is_file()


def test_the_gateway_and_the_functions_share_one_volume():
    gateway = _compose()["services"]["detr_gateway"]
    assert f"{SHARED}:{SHARED}" in gateway["volumes"]
    assert gateway["environment"]["DETR_HOME"] == SHARED
    for config in ("function.yaml", "serverless/detector/function-gpu.yaml", "serverless/trainer/function.yaml",
                   "serverless/trainer/function-gpu.yaml"):
        spec = yaml.safe_load((REPO / config).read_text())["spec"]
        home = next(v for v in spec["volumes"] if v["volume"]["name"] == "detr-home")
        assert (home["volume"]["hostPath"]["path"], home["volumeMount"]["mountPath"]) == (SHARED, SHARED), config
    trainer = yaml.safe_load((REPO / "serverless/trainer/function-gpu.yaml").read_text())
    assert {"name": "DETR_HOME", "value": SHARED} in trainer["spec"]["env"]
    assert trainer["metadata"]["name"] in gateway["environment"]["DETR_TRAINER_URL"]


def test_the_webhook_worker_may_reach_the_gateways_fixed_address():
    compose = _compose()
    address = re.search(r"\$\{DETR_GATEWAY_IP:-([\d.]+)\}", compose["services"]["detr_gateway"]["networks"]["detr"]
                        ["ipv4_address"])[1]
    worker = compose["services"]["cvat_worker_webhooks"]
    assert worker["environment"]["SMOKESCREEN_OPTS"].endswith(f"--allow-address=${{DETR_GATEWAY_IP:-{address}}}")
    assert "detr" in worker["networks"]
    subnet = compose["networks"]["detr"]["ipam"]["config"][0]["subnet"]
    assert re.search(r":-([\d.]+)/", subnet)[1].rsplit(".", 1)[0] == address.rsplit(".", 1)[0]


def test_the_gateway_image_runs_the_console_script():
    dockerfile = (DEPLOY / "Dockerfile.gateway").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^detr-gateway = "cvat_plugin.gateway.app:main"$', pyproject, re.MULTILINE)
    assert f'CMD ["detr-gateway", "--host", "0.0.0.0", "--port", "{DEFAULT_PORT}"]' in dockerfile
    assert f"{API_PREFIX}/health" in dockerfile
    ignored = (DEPLOY / "Dockerfile.gateway.dockerignore").read_text().splitlines()
    copied = [source for line in dockerfile.splitlines() if line.startswith("COPY ") for source in line.split()[1:-1]]
    assert copied == ["pyproject.toml", "README.md", "detr", "cvat_plugin", "serverless"]
    for source in copied:
        assert (REPO / source).exists(), source
        assert f"!{source}/" in ignored or f"!{source}" in ignored, source


def _instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(part.strip() for part in instruction.split("\\\n")).strip()
            for instruction in re.split(r"\n(?=[A-Z]+ )", "\n".join(lines)) if instruction.strip()]


def _distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=~! \[;]", name, maxsplit=1)[0]).lower()


def test_the_gateway_image_installs_exactly_the_gateway_extra_and_no_torch(tmp_path):
    """The package without its dependencies (the training engine's: PyTorch), plus the `gateway` extra as
    pyproject.toml lists it, read while the image builds: one list of what the gateway needs."""
    instructions = _instructions((DEPLOY / "Dockerfile.gateway").read_text())
    assert "torch" not in " ".join(instructions).lower()
    runs = [instruction.removeprefix("RUN ") for instruction in instructions if instruction.startswith("RUN ")]
    installs = [part.strip() for run in runs for part in run.split("&&") if "pip install" in part]
    assert installs == ["pip install -r /tmp/gateway-requirements.txt", "pip install --no-deps ."]
    # The Dockerfile's own command, run here on pyproject.toml, gives exactly the extra.
    reader = next(run for run in runs if "tomllib" in run).split("&&")[0]
    command = reader.replace("> /tmp/gateway-requirements.txt", f"> {tmp_path / 'requirements.txt'}")
    assert command.startswith("python -c ")
    subprocess.run(["sh", "-c", sys.executable + command.removeprefix("python")], cwd=REPO, check=True, timeout=60)
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gateway"]
    assert (tmp_path / "requirements.txt").read_text().splitlines() == extra
    assert not {"torch", "torchvision"} & {_distribution(requirement) for requirement in extra}


def test_the_gateway_extra_lists_every_distribution_the_gateway_imports():
    """Every third-party module the gateway's code imports (at the top or in a function), found from the
    modules that starting the gateway loads, comes from a distribution of the `gateway` extra."""
    code = ("import json, sys, cvat_plugin.gateway.app; print(json.dumps(sorted(m.__file__ for m in "
            "list(sys.modules.values()) if m.__name__.split('.')[0] in ('cvat_plugin', 'detr') and m.__file__)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    files = json.loads(result.stdout)
    modules = set()
    for file in files:
        for node in ast.walk(ast.parse(Path(file).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"__future__", "cvat_plugin", "detr"}
    assert {"starlette", "uvicorn", "datumaro", "requests", "platformdirs"} <= third_party
    assert not {"torch", "torchvision"} & third_party
    owners = importlib.metadata.packages_distributions()
    needed = {module: {_distribution(owner) for owner in owners[module]} for module in third_party}
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gateway"]
    declared = {_distribution(requirement) for requirement in extra}
    assert {module: sorted(owners) for module, owners in needed.items() if not owners & declared} == {}


@pytest.mark.parametrize("extra, modules", [("cvat", {"datumaro": "datumaro", "cvat_sdk": "cvat-sdk"}),
                                            ("gateway", {"datumaro": "datumaro", "starlette": "starlette"})])
def test_each_extra_installs_what_its_commands_import(extra, modules):
    """`pip install -e ".[cvat]"` as the README says is enough for export, train and annotate --local."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {re.split(r"[<>=~! \[]", requirement, maxsplit=1)[0] for requirement in extras[extra]}
    sources = "\n".join(path.read_text() for path in (REPO / "cvat_plugin").rglob("*.py"))
    for module, distribution in modules.items():
        assert re.search(rf"^\s*(from|import) {module}\b", sources, re.MULTILINE), module
        assert distribution in declared, f"{distribution} is missing from the {extra!r} extra"
