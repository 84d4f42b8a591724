#!/usr/bin/env bash
# Deploy DETR into a running CVAT, the way CVAT's serverless/deploy_cpu.sh and deploy_gpu.sh deploy
# its functions:
#   deploy/deploy.sh cpu|gpu [CVAT_DIR]
#
# - the detector in Nuclio project "cvat" (CVAT lists every function of that project as a model),
# - the trainer in project "detr" (not a model, so kept out of CVAT's list),
# both built with the repository root as build path (the images need detr/, cvat_plugin/ and
# serverless/) and attached to CVAT's compose network, so that the gateway reaches the trainer and
# the trainer the Nuclio dashboard.
# With CVAT_DIR (a CVAT checkout): also copies the UI plugin into CVAT_DIR/cvat-ui/plugins/detr and
# builds CVAT's UI image with it (CLIENT_PLUGINS=plugins/detr) and the gateway's image.
#
# The trainer's job API needs a shared token (DETR_TRAINER_TOKEN): generated here once, kept in
# DETR_TRAINER_TOKEN_FILE (mode 600, outside the repository so it never lands in an image), given to
# the trainer with --env and, with CVAT_DIR, written to CVAT_DIR/.env for the gateway's compose override.
#
# Needs docker, and nuctl of the same version as CVAT's Nuclio dashboard. Environment:
#   DETR_NETWORK            CVAT's compose network (default cvat_cvat)
#   CVAT_VERSION            tag of CVAT's images (default dev, as in CVAT's docker-compose.yml)
#   DETR_TRAINER_TOKEN_FILE where the trainer's token is kept (default ~/.config/cvat-detr/trainer-token)
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NETWORK="${DETR_NETWORK:-cvat_cvat}"

usage() {
    echo "usage: $0 cpu|gpu [CVAT_DIR]" >&2
    echo "  cpu|gpu   which function configs to deploy (function.yaml or function-gpu.yaml)" >&2
    echo "  CVAT_DIR  a CVAT checkout: also build its UI with the Train DETR plugin, and the gateway" >&2
}

fail() {
    echo "deploy.sh: $*" >&2
    exit 1
}

case "${1:-}" in
    cpu)
        detector_config=function.yaml
        trainer_config=serverless/trainer/function.yaml
        ;;
    gpu)
        detector_config=serverless/detector/function-gpu.yaml
        trainer_config=serverless/trainer/function-gpu.yaml
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
command -v nuctl >/dev/null || fail "nuctl is not installed: download the release matching CVAT's Nuclio dashboard \
(the tag of quay.io/nuclio/dashboard in components/serverless/docker-compose.serverless.yml) from \
https://github.com/nuclio/nuclio/releases"
docker network inspect "$NETWORK" >/dev/null 2>&1 || fail "docker network $NETWORK not found: start CVAT with \
serverless first (docker compose -f docker-compose.yml -f components/serverless/docker-compose.serverless.yml up -d), \
or set DETR_NETWORK to CVAT's network"

# The whole build path goes into the function images: deploy from a clean checkout.
if [ -d "$REPO_DIR/cvat_plugin/ui/node_modules" ]; then
    echo "deploy.sh: warning: $REPO_DIR/cvat_plugin/ui/node_modules will be copied into the images; deploy from" \
        "a clean checkout to keep them small" >&2
fi

platform_config="{\"attributes\": {\"network\": \"$NETWORK\"}}"

token_file="${DETR_TRAINER_TOKEN_FILE:-${XDG_CONFIG_HOME:-$HOME/.config}/cvat-detr/trainer-token}"
if [ ! -s "$token_file" ]; then
    echo "Generating the trainer's token in $token_file..."
    mkdir -p "$(dirname "$token_file")"
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$token_file")
fi
trainer_token="$(tr -d '[:space:]' < "$token_file")"
[ "${#trainer_token}" -ge 16 ] || fail "$token_file holds a token shorter than 16 characters; delete it to generate a new one"

ensure_project() {
    nuctl get project "$1" --platform local >/dev/null 2>&1 || nuctl create project "$1" --platform local
}

deploy_function() {
    local project="$1" config="$2"
    echo "Deploying $config in project $project..."
    nuctl deploy --project-name "$project" --path "$REPO_DIR" --file "$REPO_DIR/$config" --platform local \
        --platform-config "$platform_config" "${@:3}"
}

ensure_project cvat
ensure_project detr
deploy_function cvat "$detector_config"
# nuctl appends --env to the file's env (pkg/nuctl/command/deploy.go); the token stays out of the yaml.
deploy_function detr "$trainer_config" --env "DETR_TRAINER_TOKEN=$trainer_token"
nuctl get function --platform local

trainer_container="$(docker ps --filter "name=detr-trainer" --format '{{.Names}}' | head -n 1)"
if [ -n "$trainer_container" ]; then
    echo "The trainer runs as container $trainer_container: the gateway's DETR_TRAINER_URL is" \
        "http://$trainer_container:8080"
fi

echo "cvat-detr --trainer needs the token too: export DETR_TRAINER_TOKEN=\"\$(cat $token_file)\""

if [ -n "$cvat_dir" ]; then
    # The gateway's compose override reads DETR_TRAINER_TOKEN from CVAT's .env.
    env_file="$cvat_dir/.env"
    touch "$env_file" && chmod 600 "$env_file"
    if grep -q '^DETR_TRAINER_TOKEN=' "$env_file"; then
        sed -i "s/^DETR_TRAINER_TOKEN=.*/DETR_TRAINER_TOKEN=$trainer_token/" "$env_file"
    else
        echo "DETR_TRAINER_TOKEN=$trainer_token" >> "$env_file"
    fi
    echo "The trainer's token is in $env_file for the gateway"
    plugin_dir="$cvat_dir/cvat-ui/plugins/detr/src"
    echo "Copying the Train DETR plugin to $plugin_dir/ts..."
    rm -rf "$plugin_dir/ts"
    mkdir -p "$plugin_dir"
    cp -R "$REPO_DIR/cvat_plugin/ui/src/ts" "$plugin_dir/ts"
    ui_image="cvat/ui:${CVAT_VERSION:-dev}-detr"
    echo "Building $ui_image (CVAT's UI with CLIENT_PLUGINS=plugins/detr)..."
    docker build -f "$cvat_dir/Dockerfile.ui" --build-arg CLIENT_PLUGINS=plugins/detr -t "$ui_image" "$cvat_dir"
    echo "Building cvat.detr.gateway:latest..."
    docker build -f "$REPO_DIR/deploy/Dockerfile.gateway" -t cvat.detr.gateway:latest "$REPO_DIR"
    echo "Now (re)start CVAT with the DETR override, from $cvat_dir:"
    echo "  DETR_REPO=$REPO_DIR docker compose -f docker-compose.yml -f components/serverless/docker-compose.serverless.yml \\"
    echo "    -f $REPO_DIR/deploy/docker-compose.detr.yml up -d"
fi
