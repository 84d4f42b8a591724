"""The override for CVAT's docker compose (as components/serverless/docker-compose.serverless.yml is
one): the gateway behind CVAT's Traefik at /detr/, the shared volume, CVAT's UI image with the
plugin, and what CVAT's webhook worker needs to reach the gateway. Its shared parts (image names,
port, route, volume path, the gateway's folders) come from the settings table, as the Kubernetes
manifests' do.
"""

from __future__ import annotations

from typing import Any, Mapping

from deploy import settings as names
from deploy.yamltext import Key

SERVICE = "detr_gateway"
ROUTER = "detr"
#: The gateway's network: a small fixed subnet, so the gateway keeps its address across restarts.
SUBNET = "172.30.238.0/28"
GATEWAY_IP = "172.30.238.2"

HEADER = [
    "DETR for CVAT: an override for CVAT's docker compose, as components/serverless/docker-compose.serverless.yml is.",
    "It adds the DETR gateway behind CVAT's Traefik at /detr/ (the Train DETR plugin's API, same origin as",
    "CVAT), CVAT's UI image with the plugin compiled in, and what CVAT's webhook needs to reach the gateway.",
    "",
    "From a CVAT checkout (>= 2.16), with this repository at ../cvat-detr (or DETR_REPO=<its path>):",
    "  docker compose -f docker-compose.yml -f components/serverless/docker-compose.serverless.yml \\",
    "    -f ../cvat-detr/deploy/docker-compose.detr.yml up -d --build",
    "Settings come from the environment or CVAT's .env file (see \"Install into CVAT\" in the README):",
    "  DETR_TRAINER_URL, DETR_TRAINER_TOKEN (deploy/deploy.sh writes it to .env), DETR_WEBHOOK_SECRET,",
    "  DETR_AUTO_RETRAIN_PROJECTS, DETR_CVAT_TOKEN or DETR_CVAT_ACCESS_TOKEN (service account), DETR_TRAIN_DEFAULTS,",
    "  DETR_SUBNET, DETR_GATEWAY_IP.",
]


def override(settings: Mapping[str, Any]) -> dict:
    home, port = settings["home"], settings["gateway"]["port"]
    gateway_ip = f"${{DETR_GATEWAY_IP:-{GATEWAY_IP}}}"
    image, _, tag = settings["images"]["gateway"].rpartition(":")
    plugin = f"plugins/{settings['ui_plugin']}"
    writable = " and ".join(f"{folder}/" for folder in settings["gateway"]["writable"])
    gateway = {
        "container_name": SERVICE,
        "image": f"{image}:${{DETR_VERSION:-{tag}}}",
        "build": {"context": "${DETR_REPO:-../cvat-detr}", "dockerfile": "deploy/Dockerfile.gateway"},
        "restart": "always",
        "depends_on": {"detr_home": {"condition": "service_completed_successfully"},
                       "cvat_server": {"condition": "service_started"}},
        "environment": {
            names.CVAT_URL_ENV: names.cvat_url(settings, "local"),
            Key(names.TRAINER_URL_ENV, "The trainer function's container on this network (deploy/deploy.sh prints "
                                       "its name)."):
                f"${{{names.TRAINER_URL_ENV}:-{names.trainer_url(settings, 'local')}}}",
            Key(names.TOKEN_ENV, "The trainer's shared token; the gateway sends it to the trainer only, never to a "
                                 "browser."):
                f"${{{names.TOKEN_ENV}:?run deploy/deploy.sh cpu|gpu CVAT_DIR, which writes {names.TOKEN_ENV} to "
                f"CVAT's .env}}",
            names.HOME_ENV: home,
            "DETR_WEBHOOK_SECRET": "${DETR_WEBHOOK_SECRET:-}",
            "DETR_AUTO_RETRAIN_PROJECTS": "${DETR_AUTO_RETRAIN_PROJECTS:-}",
            "DETR_AUTO_RETRAIN_SCOPE": "${DETR_AUTO_RETRAIN_SCOPE:-}",
            "CVAT_TOKEN": "${DETR_CVAT_TOKEN:-}",
            "CVAT_ACCESS_TOKEN": "${DETR_CVAT_ACCESS_TOKEN:-}",
            "DETR_TRAIN_DEFAULTS": "${DETR_TRAIN_DEFAULTS:-}",
        },
        Key("volumes", f"{names.HOME_ENV}, shared with the trainer and detector functions: the hostPath of their "
                       f"function yamls."): [f"{home}:{home}"],
        "networks": {"cvat": {}, "detr": {"ipv4_address": gateway_ip}},
        "labels": {
            "traefik.enable": "true",
            f"traefik.http.services.{ROUTER}.loadbalancer.server.port": str(port),
            Key(f"traefik.http.routers.{ROUTER}.rule",
                f"Longer than the UI's Host rule, so Traefik prefers it for {names.GATEWAY_ROUTE} (the gateway serves "
                f"under {names.API_PREFIX})."):
                f"Host(`${{CVAT_HOST:-localhost}}`) && PathPrefix(`{names.GATEWAY_ROUTE}`)",
            f"traefik.http.routers.{ROUTER}.entrypoints": "web",
            Key("traefik.docker.network", "The gateway is on two networks; Traefik reaches it on CVAT's (named as "
                                          "CVAT's deploy scripts name it)."): "cvat_cvat",
        },
        "logging": {"driver": "json-file", "options": {"max-size": "100m", "max-file": "3"}},
    }
    services = {
        SERVICE: gateway,
        Key("detr_home", f"Once per start: the gateway runs unprivileged (uid {settings['gateway']['uid']}) and writes "
                         f"{writable} on the",
            "volume, which Docker created root-owned when the first function mounted it.", gap=True): {
            "image": settings["images"]["init"],
            "command": ["sh", "-c", names.home_init_command(settings)],
            "volumes": [f"{home}:{home}"],
            "network_mode": "none",
        },
        Key("cvat_ui", "CVAT's UI with the Train DETR plugin compiled in: deploy/deploy.sh copies the plugin to",
            f"cvat-ui/{plugin} and builds this image; `up --build` builds it too.", gap=True): {
            "image": names.ui_image(settings, "${CVAT_VERSION:-dev}"),
            "build": {"context": ".", "dockerfile": "Dockerfile.ui", "args": {"CLIENT_PLUGINS": plugin}},
        },
        Key("cvat_worker_webhooks",
            "CVAT's webhook worker delivers through an SSRF guard (smokescreen) that refuses private addresses:",
            "let it reach the gateway's fixed address, and nothing else. The webhook's target URL is then",
            f"http://{gateway_ip}:{port}{names.API_PREFIX}/webhooks/cvat", gap=True): {
            "environment": {"SMOKESCREEN_OPTS": f"${{SMOKESCREEN_OPTS:-}} --allow-address={gateway_ip}"},
            "networks": {"cvat": {}, "detr": {}},
        },
    }
    return {"services": services,
            Key("networks", gap=True): {
                Key("detr", "A small network with a fixed subnet, so the gateway keeps its address across restarts."):
                    {"ipam": {"config": [{"subnet": f"${{DETR_SUBNET:-{SUBNET}}}"}]}}}}


HTTPS_HEADER = [
    "With CVAT's docker-compose.https.yml: serve /detr/ on the HTTPS entrypoint too. Add it after",
    "docker-compose.detr.yml:  ... -f docker-compose.https.yml -f ../cvat-detr/deploy/docker-compose.detr.https.yml",
]


def https_override() -> dict:
    return {"services": {SERVICE: {"labels": {f"traefik.http.routers.{ROUTER}.entrypoints": "websecure",
                                              f"traefik.http.routers.{ROUTER}.tls.certresolver": "lets-encrypt"}}}}
