#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Deploy DETR into a running CVAT, the way CVAT's serverless/deploy_cpu.sh and deploy_gpu.sh deploy
# its functions:
#   deploy/deploy.sh cpu|gpu [CVAT_DIR]       CVAT on Docker (compose): Nuclio's local platform
#   deploy/deploy.sh k8s cpu|gpu [CVAT_DIR]   CVAT on Kubernetes (its Helm chart): Nuclio's kube platform
#
# - the detector in Nuclio project "cvat" (CVAT lists every function of that project as a model),
# - the trainer in project "detr" (not a model, so kept out of CVAT's list),
# both built with the repository root as build path (the images need detr/, cvat_plugin/ and
# serverless/). On Docker they join CVAT's compose network, so that the gateway reaches the trainer
# and the trainer the Nuclio dashboard.
# With CVAT_DIR (a CVAT checkout): also copies the UI plugin into CVAT_DIR/cvat-ui/plugins/detr and
# builds CVAT's UI image with it (CLIENT_PLUGINS=plugins/detr) and the gateway's image.
#
# The trainer's job API needs a shared token (DETR_TRAINER_TOKEN): generated here once, kept in
# DETR_TRAINER_TOKEN_FILE (mode 600, outside the repository so it never lands in an image). On Docker
# it goes to the trainer with --env and, with CVAT_DIR, to CVAT_DIR/.env for the gateway's compose
# override; on Kubernetes into a Secret that the trainer and the gateway read.
#
# On Kubernetes it renders the deployment files for your cluster (deploy/render.py, from
# DETR_K8S_SETTINGS), creates the token's Secret, builds and pushes the gateway's image, applies the
# manifests (shared volume claim, the trainer's role, the gateway and its /detr/ route), deploys both
# functions into CVAT's namespace and, with CVAT_DIR, builds and pushes the UI image; then it prints
# the helm upgrade that gives CVAT that UI image. Names come from deploy/deploy.env (rendered too).
#
# Needs docker, and nuctl of the same version as CVAT's Nuclio dashboard; on Kubernetes also kubectl
# (pointed at CVAT's cluster) and python3 with ruamel.yaml. Environment:
#   DETR_NETWORK            CVAT's compose network (default cvat_cvat)
#   CVAT_VERSION            tag of CVAT's images (default dev, as in CVAT's docker-compose.yml)
#   DETR_TRAINER_TOKEN_FILE where the trainer's token is kept (default ~/.config/cvat-detr/trainer-token)
#   DETR_K8S_SETTINGS       Kubernetes: a YAML file of settings (deploy/settings.py), e.g. the registry
#   DETR_K8S_DIR            Kubernetes: where the rendered files go (default ~/.config/cvat-detr/kubernetes)
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NETWORK="${DETR_NETWORK:-cvat_cvat}"
CONFIG_HOME="${XDG_CONFIG_HOME:-$HOME/.config}/cvat-detr"
# shellcheck source=deploy.env
. "$REPO_DIR/deploy/deploy.env"

usage() {
    echo "usage: $0 [k8s] cpu|gpu [CVAT_DIR]" >&2
    echo "  k8s       deploy into CVAT's Kubernetes cluster (Nuclio's kube platform) instead of Docker" >&2
    echo "  cpu|gpu   which function configs to deploy (function.yaml or function-gpu.yaml)" >&2
    echo "  CVAT_DIR  a CVAT checkout: also build its UI with the Train DETR plugin, and the gateway" >&2
}

fail() {
    echo "deploy.sh: $*" >&2
    exit 1
}

need_nuctl() {
    command -v nuctl >/dev/null || fail "nuctl is not installed: download the release matching CVAT's Nuclio \
dashboard ($1) from https://github.com/nuclio/nuclio/releases"
}

platform=local
if [ "${1:-}" = k8s ]; then
    platform=kube
    shift
fi
case "${1:-}" in
    cpu)
        detector_config=function.yaml
        trainer_config=serverless/trainer/function.yaml
        variant=""
        ;;
    gpu)
        detector_config=serverless/detector/function-gpu.yaml
        trainer_config=serverless/trainer/function-gpu.yaml
        variant="-gpu"
        ;;
    *)
        usage
        exit 2
        ;;
esac
cvat_dir="${2:-}"
if [ -n "$cvat_dir" ] && [ ! -f "$cvat_dir/Dockerfile.ui" ]; then
    fail "$cvat_dir is not a CVAT checkout (no Dockerfile.ui there); give the folder of CVAT's docker-compose.yml"
fi

command -v docker >/dev/null || fail "docker is not installed"
if [ "$platform" = local ]; then
    need_nuctl "the tag of quay.io/nuclio/dashboard in components/serverless/docker-compose.serverless.yml"
    docker network inspect "$NETWORK" >/dev/null 2>&1 || fail "docker network $NETWORK not found: start CVAT \
with serverless first (docker compose -f docker-compose.yml -f components/serverless/docker-compose.serverless.yml \
up -d), or set DETR_NETWORK to CVAT's network"
else
    need_nuctl "the image tag of the nuclio dashboard Deployment in CVAT's namespace"
    command -v kubectl >/dev/null || fail "kubectl is not installed: install it and point it at CVAT's cluster \
(https://kubernetes.io/docs/tasks/tools/)"
    python3 -c 'import ruamel.yaml' 2>/dev/null || fail "python3 with ruamel.yaml is needed to render the Kubernetes \
files: pip install 'ruamel.yaml>=0.19'"
fi

# The whole build path goes into the function images: deploy from a clean checkout.
if [ -d "$REPO_DIR/cvat_plugin/ui/node_modules" ]; then
    echo "deploy.sh: warning: $REPO_DIR/cvat_plugin/ui/node_modules will be copied into the images; deploy from" \
        "a clean checkout to keep them small" >&2
fi

if [ "$platform" = kube ]; then
    k8s_dir="${DETR_K8S_DIR:-$CONFIG_HOME/kubernetes}"
    mkdir -p "$k8s_dir" && k8s_dir="$(cd "$k8s_dir" && pwd)"
    render_args=(--out "$k8s_dir")
    if [ -n "${DETR_K8S_SETTINGS:-}" ]; then
        [ -f "$DETR_K8S_SETTINGS" ] || fail "DETR_K8S_SETTINGS: $DETR_K8S_SETTINGS is not a file"
        render_args+=(--settings "$(cd "$(dirname "$DETR_K8S_SETTINGS")" && pwd)/$(basename "$DETR_K8S_SETTINGS")")
    fi
    echo "Rendering the Kubernetes files into $k8s_dir..."
    (cd "$REPO_DIR" && python3 -m deploy.render "${render_args[@]}") || fail "the settings in \
${DETR_K8S_SETTINGS:-(defaults)} did not render; fix what the line above names"
    # shellcheck source=deploy.env
    . "$k8s_dir/deploy.env"
    [ -n "$k8s_registry" ] || fail "no image registry: set kubernetes.registry in a settings file (e.g. \
'kubernetes: {registry: registry.example.com/detr}') and give it as DETR_K8S_SETTINGS; nuctl pushes the function \
images there and the cluster pulls them from it"
    kubectl get namespace "$k8s_namespace" >/dev/null 2>&1 || fail "namespace $k8s_namespace not found: install \
CVAT's Helm chart there first (with nuclio.enabled: true), or set kubernetes.namespace in DETR_K8S_SETTINGS"
    detector_config="$k8s_dir/functions/detector$variant.yaml"
    trainer_config="$k8s_dir/functions/trainer$variant.yaml"
    nuctl_platform=(--platform kube --namespace "$k8s_namespace")
    nuctl_deploy_args=(--registry "$k8s_registry")
    if [ -n "$k8s_run_registry" ]; then
        nuctl_deploy_args+=(--run-registry "$k8s_run_registry")
    fi
else
    detector_config="$REPO_DIR/$detector_config"
    trainer_config="$REPO_DIR/$trainer_config"
    nuctl_platform=(--platform local)
    nuctl_deploy_args=(--platform-config "{\"attributes\": {\"network\": \"$NETWORK\"}}")
fi

token_file="${DETR_TRAINER_TOKEN_FILE:-$CONFIG_HOME/trainer-token}"
if [ ! -s "$token_file" ]; then
    echo "Generating the trainer's token in $token_file..."
    mkdir -p "$(dirname "$token_file")"
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$token_file")
fi
trainer_token="$(tr -d '[:space:]' < "$token_file")"
[ "${#trainer_token}" -ge 16 ] || fail "$token_file holds a token shorter than 16 characters; delete it to generate a new one"

ensure_project() {
    nuctl get project "$1" "${nuctl_platform[@]}" >/dev/null 2>&1 || nuctl create project "$1" "${nuctl_platform[@]}"
}

deploy_function() {
    local project="$1" config="$2"
    echo "Deploying $config in project $project..."
    nuctl deploy --project-name "$project" --path "$REPO_DIR" --file "$config" "${nuctl_platform[@]}" \
        "${nuctl_deploy_args[@]}" "${@:3}"
}

# CVAT_DIR's UI with the plugin compiled in, as image $1.
build_ui() {
    local plugin_dir="$cvat_dir/cvat-ui/plugins/$ui_plugin/src"
    echo "Copying the Train DETR plugin to $plugin_dir/ts..."
    rm -rf "$plugin_dir/ts"
    mkdir -p "$plugin_dir"
    cp -R "$REPO_DIR/cvat_plugin/ui/src/ts" "$plugin_dir/ts"
    echo "Building $1 (CVAT's UI with CLIENT_PLUGINS=plugins/$ui_plugin)..."
    docker build -f "$cvat_dir/Dockerfile.ui" --build-arg "CLIENT_PLUGINS=plugins/$ui_plugin" -t "$1" "$cvat_dir"
}

build_gateway() {
    echo "Building $1..."
    docker build -f "$REPO_DIR/deploy/Dockerfile.gateway" -t "$1" "$REPO_DIR"
}

if [ "$platform" = kube ]; then
    echo "Storing the trainer's token in Secret $k8s_token_secret..."
    kubectl create secret generic "$k8s_token_secret" --namespace "$k8s_namespace" \
        --from-file="$k8s_token_key=$token_file" --dry-run=client -o yaml | kubectl apply -f -
    build_gateway "$k8s_gateway_image"
    docker push "$k8s_gateway_image"
    kubectl apply --namespace "$k8s_namespace" -f "$k8s_dir/manifests/"
fi

ensure_project "$detector_project"
ensure_project "$trainer_project"
deploy_function "$detector_project" "$detector_config"
if [ "$platform" = kube ]; then
    deploy_function "$trainer_project" "$trainer_config"
else
    # nuctl appends --env to the file's env (pkg/nuctl/command/deploy.go); the token stays out of the yaml.
    deploy_function "$trainer_project" "$trainer_config" --env "DETR_TRAINER_TOKEN=$trainer_token"
fi
nuctl get function "${nuctl_platform[@]}"

if [ "$platform" = local ]; then
    trainer_container="$(docker ps --filter "name=$trainer_function" --format '{{.Names}}' | head -n 1)"
    if [ -n "$trainer_container" ]; then
        echo "The trainer runs as container $trainer_container: the gateway's DETR_TRAINER_URL is" \
            "http://$trainer_container:8080"
    fi
fi

echo "cvat-detr --trainer needs the token too: export DETR_TRAINER_TOKEN=\"\$(cat $token_file)\""

if [ "$platform" = kube ]; then
    if [ -n "$cvat_dir" ]; then
        build_ui "$k8s_ui_image"
        docker push "$k8s_ui_image"
    fi
    gateway_ip="$(kubectl get service "$k8s_gateway" --namespace "$k8s_namespace" -o 'jsonpath={.spec.clusterIP}')"
    echo "Now give CVAT the UI image with the plugin (built and pushed with CVAT_DIR), from CVAT's chart:"
    echo "  helm upgrade $k8s_cvat_release <CVAT's chart> --namespace $k8s_namespace --reuse-values \\"
    echo "    -f $k8s_dir/cvat-values.yaml"
    echo "The gateway's address is $gateway_ip: CVAT's webhook worker reaches it with the chart's value" \
        "smokescreen.opts=--allow-address=$gateway_ip (or set kubernetes.gateway_ip to fix it in cvat-values.yaml)."
    echo "Optional gateway settings (DETR_WEBHOOK_SECRET, DETR_AUTO_RETRAIN_PROJECTS, CVAT_TOKEN, ...) go in the" \
        "Secret $k8s_gateway_secret: kubectl create secret generic $k8s_gateway_secret --namespace $k8s_namespace" \
        "--from-literal=DETR_WEBHOOK_SECRET=..."
elif [ -n "$cvat_dir" ]; then
    # The gateway's compose override reads DETR_TRAINER_TOKEN from CVAT's .env.
    env_file="$cvat_dir/.env"
    touch "$env_file" && chmod 600 "$env_file"
    if grep -q '^DETR_TRAINER_TOKEN=' "$env_file"; then
        sed -i "s/^DETR_TRAINER_TOKEN=.*/DETR_TRAINER_TOKEN=$trainer_token/" "$env_file"
    else
        echo "DETR_TRAINER_TOKEN=$trainer_token" >> "$env_file"
    fi
    echo "The trainer's token is in $env_file for the gateway"
    build_ui "$ui_image_repository:${CVAT_VERSION:-dev}$ui_tag_suffix"
    build_gateway "$gateway_image"
    echo "Now (re)start CVAT with the DETR override, from $cvat_dir:"
    echo "  DETR_REPO=$REPO_DIR docker compose -f docker-compose.yml -f components/serverless/docker-compose.serverless.yml \\"
    echo "    -f $REPO_DIR/deploy/docker-compose.detr.yml up -d"
fi
