"""deploy/kubernetes: every manifest, and the Deployment each Nuclio function config becomes, passes
the Kubernetes schemas (kubernetes-validate, bundled offline, strict: unknown fields fail); and the
files agree with each other and with the Docker deployment on names, paths, env and secrets.

Not validated by schema: the NuclioFunction resource itself (Nuclio's CRD publishes no schema; its
fields are checked in test_function_configs.py and its Kubernetes parts here, as a Deployment), the
Kubeflow PyTorchJobs the trainer's role names (the trainer creates them, nothing here does), and the
values for CVAT's chart (checked against the keys the chart's templates read).
"""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cvat_plugin.gateway.app import API_PREFIX, DEFAULT_PORT
from deploy import functions, kubernetes, render
from deploy import settings as names

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
#: The oldest Kubernetes the deployment targets (kubernetes-validate bundles schemas 1.25 and newer).
K8S_VERSION = "1.30"
FUNCTIONS = sorted((KUBE / "functions").glob("*.yaml"))
LOCAL = {("detector", False): ROOT / "function.yaml",
         ("detector", True): ROOT / "serverless/detector/function-gpu.yaml",
         ("trainer", False): ROOT / "serverless/trainer/function.yaml",
         ("trainer", True): ROOT / "serverless/trainer/function-gpu.yaml"}
DEFAULTS = names.load()


def documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def manifest(kind: str, name: str) -> dict:
    return next(document for path in sorted((KUBE / "manifests").glob("*.yaml")) for document in documents(path)
                if document["kind"] == kind and document["metadata"]["name"] == name)


def env(container_or_spec: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container_or_spec.get("env", [])}


def kube_function(kind: str, gpu: bool) -> dict:
    return yaml.safe_load((KUBE / render.kube_function_path(kind, gpu)).read_text())


def as_deployment(config: dict) -> dict:
    """The Deployment Nuclio's kube platform makes of a function config: the spec's env, resources and
    volume mounts go to the processor container, its volumes, node selection and service account to
    the pod (nuclio pkg/platform/kube/functionres)."""
    spec, name = config["spec"], config["metadata"]["name"]
    labels = {"nuclio.io/function-name": name}
    container = {"name": "nuclio", "image": spec["build"]["image"], "env": spec.get("env"),
                 "resources": spec.get("resources"), "volumeMounts": [v["volumeMount"] for v in spec["volumes"]],
                 "ports": [{"name": "http", "containerPort": names.FUNCTION_PORT}]}
    pod = {"containers": [{k: v for k, v in container.items() if v is not None}],
           "volumes": [v["volume"] for v in spec["volumes"]], "nodeSelector": spec.get("nodeSelector"),
           "tolerations": spec.get("tolerations"), "serviceAccountName": spec.get("serviceAccount"),
           "imagePullSecrets": [{"name": spec["imagePullSecrets"]}] if "imagePullSecrets" in spec else None}
    deployment = {"replicas": spec.get("minReplicas", 1), "selector": {"matchLabels": labels},
                  "strategy": spec.get("deploymentStrategy"),
                  "template": {"metadata": {"labels": labels}, "spec": {k: v for k, v in pod.items() if v is not None}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"nuclio-{name}", "namespace": config["metadata"]["namespace"]},
            "spec": {k: v for k, v in deployment.items() if v is not None}}


# --- the schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((KUBE / "manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_passes_the_kubernetes_schema(path):
    kinds = []
    for document in documents(path):
        assert kubernetes_validate.validate(document, K8S_VERSION, strict=True) == K8S_VERSION
        assert document["metadata"]["namespace"] == DEFAULTS["kubernetes"]["namespace"]
        kinds.append(document["kind"])
    assert kinds == {"storage.yaml": ["PersistentVolumeClaim"], "trainer-rbac.yaml": ["ServiceAccount", "Role",
                     "RoleBinding"], "gateway.yaml": ["Deployment", "Service", "Ingress"]}[path.name]


@pytest.mark.parametrize("path", FUNCTIONS + list(LOCAL.values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_nuclio_function_becomes_a_valid_deployment(path):
    assert kubernetes_validate.validate(as_deployment(yaml.safe_load(path.read_text())), K8S_VERSION, strict=True)


@pytest.mark.parametrize("change", [
    lambda d: d["spec"]["template"]["spec"]["containers"][0].update(envFrm=[]),
    lambda d: d["spec"].update(replicas="one"),
    lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"][2]["valueFrom"].update(secret={"name": "x"}),
])
def test_the_schema_check_catches_misspelt_and_mistyped_fields(change):
    deployment = copy.deepcopy(manifest("Deployment", kubernetes.GATEWAY))
    change(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_overridden_settings_still_pass_the_schemas():
    settings = names.merge({"kubernetes": {
        "registry": "registry.example.com/detr", "gateway_ip": "10.96.40.40", "pull_secret": "registry-login",
        "storage": {"class_name": "nfs-client", "size": "1Ti"},
        "ingress": {"host": "cvat.example.com", "class_name": "traefik", "tls_secret": "cvat-tls",
                    "annotations": {"traefik.ingress.kubernetes.io/router.entrypoints": "websecure"}},
        "trainer": {"gpus": 4, "resources": {"limits": {"memory": "200Gi"}}}}})
    for build in (kubernetes.storage, kubernetes.trainer_rbac, kubernetes.gateway):
        for document in yaml.safe_load_all(render.dump_all(build(settings), [])):
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    _, config = functions.trainer(settings, platform="kube", gpu=True, path="x.yaml")
    config = yaml.safe_load(render.dump(config))
    kubernetes_validate.validate(as_deployment(config), K8S_VERSION, strict=True)
    assert config["spec"]["resources"] == {"requests": {"nvidia.com/gpu": 4},
                                           "limits": {"memory": "200Gi", "nvidia.com/gpu": 4}}
    assert config["spec"]["imagePullSecrets"] == "registry-login", "Nuclio's field is the Secret's name"

    deployment, service, ingress = yaml.safe_load_all(render.dump_all(kubernetes.gateway(settings), []))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example.com/detr/cvat.detr.gateway:latest"
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-login"}]
    assert service["spec"]["clusterIP"] == "10.96.40.40"
    assert ingress["spec"]["ingressClassName"] == "traefik"
    assert ingress["spec"]["tls"] == [{"hosts": ["cvat.example.com"], "secretName": "cvat-tls"}]
    assert ingress["metadata"]["annotations"] == {"traefik.ingress.kubernetes.io/router.entrypoints": "websecure"}
    values = yaml.safe_load(render.dump(kubernetes.cvat_values(settings)))
    assert values["smokescreen"] == {"opts": "--allow-address=10.96.40.40"}
    assert values["cvat"]["frontend"] == {"image": "registry.example.com/detr/cvat/ui", "tag": "v2.42.0-detr"}


# --- what the files agree on ---------------------------------------------------------------------


@pytest.mark.parametrize("kind, gpu", list(LOCAL), ids=lambda v: str(v))
def test_kube_functions_keep_the_local_env_contract_on_the_shared_claim(kind, gpu):
    kube, local = kube_function(kind, gpu), yaml.safe_load(LOCAL[(kind, gpu)].read_text())
    kube_env, local_env = env(kube["spec"]), env(local["spec"])
    assert set(local_env) <= set(kube_env)
    for name, item in local_env.items():
        if name != names.DASHBOARD_ENV:
            assert kube_env[name] == item, name
    for key in ("handler", "runtime", "triggers", "build", "description"):
        assert kube["spec"][key] == local["spec"][key], key
    assert kube["metadata"]["annotations"] == local["metadata"]["annotations"]

    claim = manifest("PersistentVolumeClaim", names.DEFAULTS["volume"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    home = next(v for v in kube["spec"]["volumes"] if v["volumeMount"]["mountPath"] == kube_env["DETR_HOME"]["value"])
    assert home["volume"]["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    local_home = next(v for v in local["spec"]["volumes"] if v["volume"]["name"] == home["volume"]["name"])
    assert local_home["volumeMount"] == home["volumeMount"]
    assert kube["metadata"]["namespace"] == claim["metadata"]["namespace"]
    assert "platform" not in kube["spec"], "restart policy and mount mode are the local platform's"


@pytest.mark.parametrize("kind", ["detector", "trainer"])
def test_gpu_functions_request_their_gpus_on_gpu_nodes(kind):
    gpu, cpu = kube_function(kind, True)["spec"], kube_function(kind, False)["spec"]
    count = DEFAULTS["kubernetes"][kind]["gpus"]
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == gpu["resources"]["limits"]["nvidia.com/gpu"] == count
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    assert "nodeSelector" not in cpu and "tolerations" not in cpu
    assert all("nvidia.com/gpu" not in part for part in cpu["resources"].values())
    assert gpu["readinessTimeoutSeconds"] >= 600, "pulling a CUDA image takes minutes"

    settings = names.merge({"kubernetes": {kind: {"gpus": 3}}})
    build = functions.detector if kind == "detector" else functions.trainer
    _, config = build(settings, platform="kube", gpu=True, path="x.yaml")
    assert yaml.safe_load(render.dump(config))["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 3


def test_the_trainers_token_comes_from_the_secret_that_the_gateway_reads():
    kube = DEFAULTS["kubernetes"]
    reference = {"secretKeyRef": {"name": kube["token_secret"], "key": kube["token_key"]}}
    gateway = manifest("Deployment", kubernetes.GATEWAY)["spec"]["template"]["spec"]["containers"][0]
    for kind, gpu in LOCAL:
        assert env(kube_function(kind, gpu)["spec"]).get("DETR_TRAINER_TOKEN") == (
            {"name": "DETR_TRAINER_TOKEN", "valueFrom": reference} if kind == "trainer" else None)
    assert env(gateway)["DETR_TRAINER_TOKEN"] == {"name": "DETR_TRAINER_TOKEN", "valueFrom": reference}
    for path in [*FUNCTIONS, *LOCAL.values(), *(KUBE / "manifests").glob("*.yaml")]:
        for document in documents(path):
            assert "kind: Secret" not in yaml.safe_dump(document), "the Secret is made by deploy.sh, not a file"


def test_the_trainer_may_manage_pytorchjobs_in_its_namespace_and_nothing_else():
    trainer = kube_function("trainer", True)
    namespace, account = trainer["metadata"]["namespace"], trainer["spec"]["serviceAccount"]
    role, binding = manifest("Role", account), manifest("RoleBinding", account)
    assert manifest("ServiceAccount", account)["metadata"]["namespace"] == namespace
    assert role["rules"] == [{"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"],
                              "verbs": ["create", "get", "list", "delete"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    assert trainer["spec"]["deploymentStrategy"] == {"type": "Recreate"}, "never two trainers on one volume"
    assert trainer["spec"]["minReplicas"] == trainer["spec"]["maxReplicas"] == 1


@pytest.mark.parametrize("gpu", [False, True])
def test_the_trainer_sets_the_training_backends_contract(gpu):
    trainer = kube_function("trainer", gpu)
    values = {name: item["value"] for name, item in env(trainer["spec"]).items() if "value" in item}
    assert {name: values[name] for name in names.BACKEND_ENV.values()} == {
        "DETR_TRAIN_BACKEND": "local", "DETR_TRAIN_PROCESSES": "auto", "DETR_KUBE_NAMESPACE": "cvat",
        "DETR_KUBE_IMAGE": trainer["spec"]["build"]["image"], "DETR_KUBE_PVC": "detr-home", "DETR_KUBE_NODES": "2",
        "DETR_KUBE_GPUS_PER_NODE": "1" if gpu else "0"}
    assert values["NUCLIO_DASHBOARD_URL"] == "http://cvat-nuclio-dashboard:8070", "CVAT's chart's CVAT_NUCLIO_HOST"
    assert values["NUCLIO_NAMESPACE"] == trainer["metadata"]["namespace"], "where CVAT lists functions"


def test_the_gateway_matches_the_compose_gateway():
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.detr.yml").read_text())["services"]
    deployment, service = manifest("Deployment", kubernetes.GATEWAY), manifest("Service", kubernetes.GATEWAY)
    ingress = manifest("Ingress", kubernetes.GATEWAY)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": DEFAULT_PORT}]
    assert service["spec"]["ports"] == [{"name": "http", "port": DEFAULT_PORT, "targetPort": "http"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert container["readinessProbe"]["httpGet"]["path"] == f"{API_PREFIX}/health"
    assert set(env(container)) == {"CVAT_URL", "DETR_TRAINER_URL", "DETR_TRAINER_TOKEN", "DETR_HOME"}
    assert set(env(container)) <= set(compose["detr_gateway"]["environment"])
    assert env(container)["CVAT_URL"]["value"] == "http://cvat-backend-service:8080"
    trainer = kube_function("trainer", True)["metadata"]["name"]
    assert env(container)["DETR_TRAINER_URL"]["value"] == f"http://nuclio-{trainer}:8080", "Nuclio's Service"
    assert env(container)["DETR_HOME"]["value"] == compose["detr_gateway"]["environment"]["DETR_HOME"]
    (init,) = pod["initContainers"]
    assert init["command"] == compose["detr_home"]["command"] and init["image"] == compose["detr_home"]["image"]
    assert pod["volumes"] == [{"name": "detr-home", "persistentVolumeClaim": {"claimName": "detr-home"}}]

    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert f"PathPrefix(`{path['path']}`)" in compose["detr_gateway"]["labels"]["traefik.http.routers.detr.rule"]
    assert API_PREFIX.startswith(path["path"]) and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"number": DEFAULT_PORT}}
    assert rule["host"] == "cvat.local", "the chart's default ingress.hostname"


def test_cvat_values_set_only_what_cvats_chart_reads():
    values = yaml.safe_load((KUBE / "cvat-values.yaml").read_text())
    # helm-chart/values.yaml: cvat.frontend.{image,tag} (templates/cvat_frontend/deployment.yml uses
    # "{{ image }}:{{ tag }}"), nuclio.enabled (the Nuclio subchart and CVAT_SERVERLESS), smokescreen.opts.
    assert values == {"cvat": {"frontend": {"image": "cvat/ui", "tag": "v2.42.0-detr"}}, "nuclio": {"enabled": True}}
    env_file = (ROOT / "deploy/deploy.env").read_text()
    assert f"k8s_ui_image={values['cvat']['frontend']['image']}:{values['cvat']['frontend']['tag']}\n" in env_file
