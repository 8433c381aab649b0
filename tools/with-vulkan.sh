#!/usr/bin/env bash
# Runs a command with the lavapipe (CPU Vulkan) driver that tools/setup.sh
# unpacked, so WebGPU tests find an adapter on machines without a GPU.
# Without the cache the command runs unchanged (WebGPU tests then skip).
set -euo pipefail

if (($# == 0)); then
  echo "usage: tools/with-vulkan.sh COMMAND [ARGS...]" >&2
  exit 2
fi

env_file="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/vulkan/env.sh"
if [[ -f "$env_file" ]]; then
  # shellcheck disable=SC1090
  . "$env_file"
fi
exec "$@"
