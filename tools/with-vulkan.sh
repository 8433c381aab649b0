#!/usr/bin/env bash
# Runs a command with the lavapipe (CPU Vulkan) driver that tools/setup.sh
# unpacked into .cache/vulkan, so WebGPU tests find an adapter on machines
# without a GPU. The WebGPU package's test scripts run through it.
#
# - Without the cache the command runs unchanged (WebGPU tests then skip).
# - A driver chosen by the caller (VK_ICD_FILENAMES or VK_DRIVER_FILES) is kept.
# - Where an NVIDIA Vulkan driver is installed the GPU is used, not lavapipe;
#   LIGHTNING_VULKAN=lavapipe forces lavapipe, LIGHTNING_VULKAN=system the
#   system's drivers.
# The Vulkan loader unpacked beside lavapipe (where the system has none) is put
# on LD_LIBRARY_PATH either way: the dynamic linker reads it at process start,
# which is why this is a wrapper and not code in the test process.
set -euo pipefail

if (($# == 0)); then
  echo "usage: tools/with-vulkan.sh COMMAND [ARGS...]" >&2
  exit 2
fi

nvidia_vulkan_driver() {
  local d
  for d in /etc/vulkan/icd.d /usr/share/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
    compgen -G "$d/nvidia_icd*.json" >/dev/null && return 0
  done
  return 1
}

env_file="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/vulkan/env.sh"
if [[ -f "$env_file" ]]; then
  callers_icd="${VK_ICD_FILENAMES:-}"
  callers_driver="${VK_DRIVER_FILES:-}"
  # shellcheck disable=SC1090
  . "$env_file"
  case "${LIGHTNING_VULKAN:-}" in
    lavapipe) ;;
    system) unset VK_ICD_FILENAMES ;;
    *)
      if [[ -n "$callers_icd$callers_driver" ]] || nvidia_vulkan_driver; then
        unset VK_ICD_FILENAMES
        [[ -z "$callers_icd" ]] || export VK_ICD_FILENAMES="$callers_icd"
      fi
      ;;
  esac
fi
exec "$@"
