"""The Kubernetes manifests beside CVAT's Helm chart: the shared volume's claim, the trainer's
service account and role, the gateway (Deployment, Service, and the Ingress route ``/detr/`` on
CVAT's host), and the values that give CVAT's chart the UI image with the plugin.

CVAT's chart (helm-chart/ of cvat-ai/cvat) names what the gateway talks to: its backend Service
``<release>-backend-service`` (port 8080), its Nuclio dashboard ``<release>-nuclio-dashboard``
(CVAT_NUCLIO_HOST), the function namespace = the release's namespace, its UI image from
``cvat.frontend.image`` and ``cvat.frontend.tag``, and its webhook worker's ``smokescreen.opts``.
"""

from __future__ import annotations

from typing import Any, Mapping

from deploy import settings as names
from deploy.yamltext import Item, Key

PART_OF = {"app.kubernetes.io/part-of": "cvat-detr"}
GATEWAY = "detr-gateway"
#: Optional Secret with the gateway's other settings (webhook secret, service account token, ...).
GATEWAY_SECRET = "detr-gateway"


def _metadata(name: str, settings: Mapping[str, Any], component: str) -> dict:
    return {"name": name, "namespace": settings["kubernetes"]["namespace"],
            "labels": {"app.kubernetes.io/name": component, **PART_OF}}


def storage(settings: Mapping[str, Any]) -> list[dict]:
    kube = settings["kubernetes"]
    spec: dict[str, Any] = {Key("accessModes", "Read and written by pods on different nodes"): ["ReadWriteMany"]}
    if kube["storage"]["class_name"]:
        spec["storageClassName"] = kube["storage"]["class_name"]
    spec["resources"] = {"requests": {"storage": kube["storage"]["size"]}}
    return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": _metadata(settings["volume"], settings, "detr-home"), "spec": spec}]


def trainer_rbac(settings: Mapping[str, Any]) -> list[dict]:
    name = settings["functions"]["trainer"]
    rule, metadata, rbac = names.PYTORCHJOBS, _metadata(name, settings, name), "rbac.authorization.k8s.io"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": metadata,
         "rules": [{"apiGroups": [rule["group"]], "resources": [rule["resource"]], "verbs": rule["verbs"]}]},
        {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": metadata,
         "roleRef": {"apiGroup": rbac, "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": settings["kubernetes"]["namespace"]}]},
    ]


def gateway(settings: Mapping[str, Any]) -> list[dict]:
    kube = settings["kubernetes"]
    port, home, volume = settings["gateway"]["port"], settings["home"], settings["volume"]
    selector = {"app.kubernetes.io/name": GATEWAY}
    probe = {"httpGet": {"path": names.GATEWAY_HEALTH, "port": "http"}, "periodSeconds": 30, "timeoutSeconds": 5}
    env = [
        {"name": names.CVAT_URL_ENV, "value": names.cvat_url(settings, "kube")},
        {"name": names.TRAINER_URL_ENV, "value": names.trainer_url(settings, "kube")},
        Item({"name": names.TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": kube["token_secret"],
                                                                      "key": kube["token_key"]}}},
             "The trainer's token: sent to the trainer only, never to a browser"),
        {"name": names.HOME_ENV, "value": home},
    ]
    pod = {
        Key("initContainers", "Once per start: the gateway runs unprivileged and writes only these folders of the "
                              "volume"): [
            {"name": "detr-home", "image": settings["images"]["init"],
             "command": ["sh", "-c", names.home_init_command(settings)],
             "volumeMounts": [{"name": volume, "mountPath": home}]},
        ],
        "containers": [{
            "name": "gateway",
            "image": names.image_ref(settings, settings["images"]["gateway"]),
            "ports": [{"name": "http", "containerPort": port}],
            "env": env,
            Key("envFrom", f"Optional settings (DETR_WEBHOOK_SECRET, DETR_AUTO_RETRAIN_PROJECTS, CVAT_TOKEN, ...): "
                           f"the Secret {GATEWAY_SECRET}"): [{"secretRef": {"name": GATEWAY_SECRET, "optional": True}}],
            "volumeMounts": [{"name": volume, "mountPath": home}],
            "readinessProbe": probe,
            Key("livenessProbe", "Alive while it accepts connections; its health route also asks the trainer and CVAT"):
                {"tcpSocket": {"port": "http"}, "periodSeconds": 30, "initialDelaySeconds": 20},
            "resources": kube["gateway"]["resources"],
        }],
        "volumes": [{"name": volume, "persistentVolumeClaim": {"claimName": volume}}],
    }
    if kube["pull_secret"]:
        pod["imagePullSecrets"] = [{"name": kube["pull_secret"]}]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(GATEWAY, settings, GATEWAY),
        "spec": {
            Key("replicas", "One: it keeps the webhook deliveries it acted on in a file on the volume"): 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": {**selector, **PART_OF}}, "spec": pod},
        },
    }
    service_spec: dict[str, Any] = {"selector": selector,
                                    "ports": [{"name": "http", "port": port, "targetPort": "http"}]}
    if kube["gateway_ip"]:
        fixed = Key("clusterIP", "Fixed, so CVAT's webhook worker may be allowed to reach it")
        service_spec[fixed] = kube["gateway_ip"]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(GATEWAY, settings, GATEWAY),
               "spec": service_spec}
    return [deployment, service, _ingress(settings)]


def _ingress(settings: Mapping[str, Any]) -> dict:
    ingress = settings["kubernetes"]["ingress"]
    metadata = _metadata(GATEWAY, settings, GATEWAY)
    if ingress["annotations"]:
        metadata["annotations"] = ingress["annotations"]
    spec: dict[str, Any] = {}
    if ingress["class_name"]:
        spec["ingressClassName"] = ingress["class_name"]
    if ingress["tls_secret"]:
        spec["tls"] = [{"hosts": [ingress["host"]], "secretName": ingress["tls_secret"]}]
    path = {"path": names.GATEWAY_ROUTE, "pathType": "Prefix",
            "backend": {"service": {"name": GATEWAY, "port": {"number": settings["gateway"]["port"]}}}}
    spec[Key("rules", "CVAT's host: its UI route is \"/\", so this longer prefix wins (Traefik and NGINX "
                      "prefer the longest)")] = [{"host": ingress["host"], "http": {"paths": [path]}}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


def cvat_values(settings: Mapping[str, Any]) -> dict:
    """Values for CVAT's chart, given after the admin's own (``-f``): the UI image with the plugin,
    Nuclio on, and (with a fixed gateway address) the webhook worker's leave to reach the gateway."""
    kube = settings["kubernetes"]
    ui_image, _, ui_tag = names.ui_image(settings, kube["cvat_version"]).rpartition(":")
    values: dict[str, Any] = {
        Key("cvat", "CVAT's UI with the Train DETR plugin compiled in (deploy.sh builds and pushes it)"): {
            "frontend": {"image": names.image_ref(settings, ui_image), "tag": ui_tag},
        },
        Key("nuclio", "CVAT's Nuclio: it runs the detector and the trainer, and CVAT lists its functions as models"):
            {"enabled": True},
    }
    if kube["gateway_ip"]:
        values[Key("smokescreen", "CVAT's webhook worker refuses private addresses: let it reach the gateway's, "
                                  "and nothing else")] = {"opts": f"--allow-address={kube['gateway_ip']}"}
    return values
