#!/usr/bin/env bash
# Set up a fresh checkout: a supported Node, pnpm, dependencies, a CPU Vulkan
# driver for the WebGPU tests, and a build. Safe to run again; finished steps
# are skipped.
set -euo pipefail

PNPM_VERSION=10.34.9
# Installed where the machine's Node is older than the supported LTS lines
# (22.12 and later 22.x, 24 and later; package.json "engines").
NODE_VERSION=24.22.3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The PATH of the shell that runs the next command (`pnpm test`), before this script changes its own.
CALLER_PATH="$PATH"
cd "$ROOT"

VK_DIR="$ROOT/.cache/vulkan"
VK_ROOT="$VK_DIR/root"
VK_STAMP="$VK_DIR/.complete"
LIBDIR_REL="usr/lib/x86_64-linux-gnu"

log() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] warning: %s\n' "$*" >&2; }

SECONDS=0
step_started=0
# Logs a finished step with its seconds: what a fresh clone spends where.
step_done() {
  log "$* ($((SECONDS - step_started)) s)"
  step_started=$SECONDS
}

# ---------------------------------------------------------------------------
# 0. Node: 22.12+ or 24+. An older one is replaced, for this and the following
#    commands, by the official build from the npm registry (the package
#    node-<os>-<arch> holds the node binary and its headers, which the CUDA
#    addon's build needs): unpacked under /usr/local (root) or ~/.local, with
#    bin/node linked where it precedes the system's node on PATH.
# ---------------------------------------------------------------------------
node_supported() {
  local v major minor
  v="$("${1:-node}" --version 2>/dev/null)" || return 1
  v="${v#v}"
  major="${v%%.*}"
  minor="${v#*.}"
  minor="${minor%%.*}"
  ((major >= 24 || (major == 22 && minor >= 12)))
}

install_node() {
  local os arch prefix dir pkg tmp link
  case "$(uname -s)" in Linux) os=linux ;; Darwin) os=darwin ;; *) os="" ;; esac
  case "$(uname -m)" in x86_64 | amd64) arch=x64 ;; aarch64 | arm64) arch=arm64 ;; *) arch="" ;; esac
  if [[ -z "$os" || -z "$arch" ]]; then
    echo "[setup] error: Node $(node --version 2>/dev/null || echo '(none)') is too old and there is no Node build for $(uname -s) $(uname -m) on npm; install Node 22.12+ or 24+" >&2
    exit 1
  fi
  if [[ "$(id -u)" == 0 ]]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
  pkg="node-$os-$arch"
  dir="$prefix/lib/$pkg-$NODE_VERSION"
  link="$prefix/bin/node"
  if [[ ! -x "$dir/bin/node" ]]; then
    log "installing Node $NODE_VERSION into $dir (found: $(node --version 2>/dev/null || echo none))"
    tmp="$(mktemp -d)"
    # npm checks the tarball against the registry's integrity hash.
    (cd "$tmp" && npm pack --silent "$pkg@$NODE_VERSION" >/dev/null)
    mkdir -p "$tmp/x" "$prefix/lib"
    tar xzf "$tmp/$pkg-$NODE_VERSION.tgz" -C "$tmp/x"
    rm -rf "$dir"
    mv "$tmp/x/package" "$dir"
    rm -rf "$tmp"
  fi
  mkdir -p "$prefix/bin"
  if [[ -e "$link" && ! -L "$link" ]]; then
    echo "[setup] error: $link exists and is not a link this script made; remove it or put Node 22.12+ or 24+ first on PATH" >&2
    exit 1
  fi
  ln -sfn "$dir/bin/node" "$link"
  # The caller's shell runs the next command (`pnpm test`) with its own PATH:
  # say so if the new node does not come first there.
  if [[ "$(type -P node)" != "$link" ]] && ! node_supported "$(type -P node)"; then
    case ":$PATH:" in
      *":$prefix/bin:"*) warn "$prefix/bin comes after $(dirname "$(type -P node)") on PATH, so later commands would still run node $(node --version)." ;;
      *) warn "$prefix/bin is not on PATH, so later commands would still run node $(node --version) from $(dirname "$(type -P node)")." ;;
    esac
    warn "run: export PATH=\"$prefix/bin:\$PATH\"   (and add it to your shell's profile)"
  fi
  PATH="$prefix/bin:$PATH"
  hash -r
}

if node_supported node; then
  log "node $(node --version) ($(type -P node))"
else
  install_node
  node_supported node || {
    echo "[setup] error: node on PATH is still $(node --version)" >&2
    exit 1
  }
  step_done "node $(node --version) ($(type -P node))"
fi

# ---------------------------------------------------------------------------
# 1. pnpm, pinned. corepack is avoided on purpose: its signature checks fail
#    here, and newer pnpm majors refuse installs with unapproved build scripts.
# ---------------------------------------------------------------------------
pnpm_is_corepack_shim() {
  local p
  p="$(command -v pnpm 2>/dev/null)" || return 1
  case "$(readlink -f "$p")" in *corepack*) return 0 ;; esac
  return 1
}

current_pnpm=""
if command -v pnpm >/dev/null 2>&1 && ! pnpm_is_corepack_shim; then
  current_pnpm="$(pnpm --version 2>/dev/null || true)"
fi
if [[ "$current_pnpm" == "$PNPM_VERSION" ]]; then
  log "pnpm $PNPM_VERSION present"
  step_started=$SECONDS
else
  log "installing pnpm $PNPM_VERSION (found: ${current_pnpm:-none})"
  npm_flags=(--no-fund --no-audit)
  # A corepack shim owns the pnpm bin link; --force lets npm replace it.
  if pnpm_is_corepack_shim; then npm_flags+=(--force); fi
  npm i -g "${npm_flags[@]}" "pnpm@$PNPM_VERSION" >/dev/null
  hash -r
  # npm's global bin directory is not always on PATH in fresh shells (it is not where this script
  # installed Node): link pnpm beside the node that the caller's shell finds.
  gbin="$(npm prefix -g)/bin"
  PATH="$gbin:$PATH"
  if ! (PATH="$CALLER_PATH"; command -v pnpm >/dev/null 2>&1); then
    nbin="$(dirname "$(PATH="$CALLER_PATH"; type -P node)")"
    if [[ -w "$nbin" && "$nbin" != "$gbin" ]]; then
      ln -sfn "$gbin/pnpm" "$nbin/pnpm"
      ln -sfn "$gbin/pnpx" "$nbin/pnpx"
    else
      warn "pnpm is in $gbin, which is not on PATH: run export PATH=\"$gbin:\$PATH\""
    fi
  fi
  current_pnpm="$(pnpm --version)"
  [[ "$current_pnpm" == "$PNPM_VERSION" ]] || {
    echo "[setup] error: pnpm on PATH is $current_pnpm, expected $PNPM_VERSION" >&2
    exit 1
  }
  step_done "pnpm $PNPM_VERSION installed"
fi
# pnpm runs scripts with the node it finds on PATH: check that it is this one.
log "pnpm runs node $(pnpm exec node --version)"

# ---------------------------------------------------------------------------
# 2. Dependencies, exactly as locked.
# ---------------------------------------------------------------------------
log "pnpm install --frozen-lockfile"
# Without a TTY pnpm aborts instead of asking when node_modules must be rebuilt.
# The CUDA addon is compiled by the build below rather than at install: there
# nvcc runs beside the TypeScript builds, which leave a core idle.
LIGHTNING_CUDA_SKIP=1 pnpm install --frozen-lockfile --config.confirmModulesPurge=false
step_done "dependencies installed"

# ---------------------------------------------------------------------------
# 3. Lavapipe (Mesa's CPU Vulkan driver) for Dawn, unpacked into .cache/vulkan.
#    Debian 12's own Mesa 22 is too old for current Dawn; bookworm-backports
#    (Mesa 25) works. Nothing is installed system-wide except an apt source;
#    tests pick the driver up through .cache/vulkan/env.sh.
# ---------------------------------------------------------------------------

# True when a .deb package is installed on the system (so its libs are found).
pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# Package names a downloaded .deb depends on (first alternative of each group,
# unless another alternative is already installed), without version limits.
deb_depends() {
  local group alt chosen alts
  # With two fields requested dpkg-deb prefixes each line with its field name.
  dpkg-deb -f "$1" Depends Pre-Depends | sed -E 's/^(Pre-)?Depends: *//' | tr ',' '\n' |
    while read -r group; do
      [[ -n "$group" ]] || continue
      chosen=""
      IFS='|' read -ra alts <<<"$group"
      for alt in "${alts[@]}"; do
        alt="$(sed -E 's/\(.*\)//; s/:any//; s/[[:space:]]//g' <<<"$alt")"
        [[ -n "$alt" ]] || continue
        if pkg_installed "$alt"; then chosen=""; break; fi
        [[ -n "$chosen" ]] || chosen="$alt"
      done
      [[ -z "$chosen" ]] || echo "$chosen"
    done
}

# The archive URI of the running release, taken from the configured sources so
# backports comes from the same mirror (or snapshot) the system already trusts.
debian_mirror() {
  local codename="$1" f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    # deb822 stanzas: print the first URI of a stanza whose Suites include the release.
    uri="$(awk -v s="$codename" '
      BEGIN { RS=""; FS="\n" }
      {
        u=""; ok=0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { split($i, a, /[[:space:]]+/); u=a[2] }
          if ($i ~ /^Suites:/) { n=split($i, b, /[[:space:]]+/); for (j = 2; j <= n; j++) if (b[j] == s) ok=1 }
        }
        if (ok && u != "") { print u; exit }
      }' "$f")"
    [[ -z "$uri" ]] || { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    # One-line format: deb [options] URI suite components...
    uri="$(sed -E 's/\[[^]]*\]//' "$f" | awk -v s="$codename" '$1 == "deb" && $3 == s { print $2; exit }')"
    [[ -z "$uri" ]] || { echo "$uri"; return; }
  done
  echo "http://deb.debian.org/debian"
}

has_apt_suite() {
  grep -Eqs "(^|[[:space:]])$1([[:space:]]|$)" \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}

# Downloads packages into the current directory, refreshing the package lists
# once if they are stale.
apt_download() {
  if ! apt-get download -q "$@" >/dev/null 2>"$TMP/apt.err"; then
    log "refreshing apt package lists"
    apt-get update -q >/dev/null
    apt-get download -q "$@" >/dev/null 2>"$TMP/apt.err" || { cat "$TMP/apt.err" >&2; return 1; }
  fi
}

write_vulkan_env() {
  local lvp="$VK_ROOT/$LIBDIR_REL/libvulkan_lvp.so"
  # Written on every run: both files hold absolute paths, so a moved checkout heals.
  cat >"$VK_DIR/lvp_icd.json" <<EOF
{
    "file_format_version": "1.0.0",
    "ICD": {
        "library_path": "$lvp",
        "api_version": "$(cat "$VK_DIR/api_version")"
    }
}
EOF
  {
    echo "# Sourced by test scripts: use the unpacked lavapipe (CPU Vulkan) driver."
    echo "export VK_ICD_FILENAMES=\"$VK_DIR/lvp_icd.json\""
    if [[ -s "$VK_DIR/needs_ld_path" ]]; then
      # Libraries unpacked next to the driver (e.g. the Vulkan loader) are not
      # known to the dynamic linker otherwise.
      echo "export LD_LIBRARY_PATH=\"$VK_ROOT/$LIBDIR_REL:$VK_ROOT/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
    fi
  } >"$VK_DIR/env.sh"
}

fetch_lavapipe() {
  local codename suite mirror keyring
  # shellcheck disable=SC1091
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  suite=""
  if [[ "$codename" == "bookworm" ]]; then
    suite="bookworm-backports"
    if ! has_apt_suite "$suite"; then
      mirror="$(debian_mirror "$codename")"
      keyring=/usr/share/keyrings/debian-archive-keyring.gpg
      log "adding apt source $suite ($mirror)"
      {
        echo "Types: deb"
        echo "URIs: $mirror"
        echo "Suites: $suite"
        echo "Components: main"
        [[ ! -f "$keyring" ]] || echo "Signed-By: $keyring"
      } >/etc/apt/sources.list.d/bookworm-backports.sources
      apt-get update -q >/dev/null
    fi
  fi

  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  # apt drops to the _apt user for downloads; let it write here.
  if id _apt >/dev/null 2>&1; then chown _apt "$TMP"; fi

  rm -rf "$VK_DIR"
  mkdir -p "$VK_ROOT"

  log "downloading mesa-vulkan-drivers${suite:+ from $suite}"
  (cd "$TMP" && apt_download "mesa-vulkan-drivers${suite:+/$suite}")

  # Unpack the driver, then every dependency not installed on this machine
  # (the Vulkan loader, and e.g. LLVM on slim images), transitively.
  local -A seen=()
  local queue=() deb pkg next
  deb="$(ls "$TMP"/mesa-vulkan-drivers_*.deb)"
  dpkg -x "$deb" "$VK_ROOT"
  dpkg-deb -f "$deb" Version >"$VK_DIR/mesa_version"
  seen[mesa-vulkan-drivers]=1
  mapfile -t queue < <(deb_depends "$deb")
  : >"$VK_DIR/needs_ld_path"
  local want=()
  while ((${#queue[@]})); do
    want=()
    for pkg in "${queue[@]}"; do
      [[ -z "${seen[$pkg]:-}" ]] || continue
      seen[$pkg]=1
      pkg_installed "$pkg" || want+=("$pkg")
    done
    ((${#want[@]})) || break
    log "unpacking dependencies not installed here: ${want[*]}"
    # One apt call per level is much faster than one per package. Should it
    # fail (a virtual package cannot be downloaded), fetch them one by one;
    # the ldd check below catches anything that really is missing.
    if ! (cd "$TMP" && apt_download "${want[@]}"); then
      for pkg in "${want[@]}"; do
        (cd "$TMP" && apt_download "$pkg") || warn "could not download $pkg; continuing"
      done
    fi
    next=()
    for pkg in "${want[@]}"; do
      deb="$(ls "$TMP"/"${pkg}"_*.deb 2>/dev/null || true)"
      [[ -n "$deb" ]] || continue
      dpkg -x "$deb" "$VK_ROOT"
      echo "$pkg" >>"$VK_DIR/needs_ld_path"
      mapfile -t -O "${#next[@]}" next < <(deb_depends "$deb")
    done
    queue=("${next[@]+"${next[@]}"}")
  done

  # The driver's own manifest carries the Vulkan version it implements.
  sed -nE 's/.*"api_version": *"([^"]+)".*/\1/p' \
    "$VK_ROOT/usr/share/vulkan/icd.d/lvp_icd.json" >"$VK_DIR/api_version"
  write_vulkan_env

  # Every library the driver links must now resolve.
  local missing
  missing="$(
    # shellcheck disable=SC1091
    . "$VK_DIR/env.sh"
    ldd "$VK_ROOT/$LIBDIR_REL/libvulkan_lvp.so" | grep 'not found' || true
  )"
  if [[ -n "$missing" ]]; then
    warn "lavapipe still misses libraries:"
    echo "$missing" >&2
    return 1
  fi
  # Dawn dlopens the Vulkan loader; the driver itself does not link it.
  # (grep reads all input: with pipefail an early exit would fail ldconfig.)
  if ! ldconfig -p | grep 'libvulkan\.so\.1 ' >/dev/null &&
    [[ ! -e "$VK_ROOT/$LIBDIR_REL/libvulkan.so.1" ]]; then
    warn "no Vulkan loader (libvulkan.so.1) found"
    return 1
  fi
  date -u +%FT%TZ >"$VK_STAMP"
}

if [[ -f "$VK_STAMP" && -f "$VK_ROOT/$LIBDIR_REL/libvulkan_lvp.so" ]]; then
  write_vulkan_env
  log "lavapipe (Mesa $(cat "$VK_DIR/mesa_version")) cached in .cache/vulkan"
elif [[ "$(uname -m)" != "x86_64" ]]; then
  log "skipping lavapipe: only set up for x86_64 (WebGPU tests will skip)"
elif [[ "$(id -u)" != 0 ]]; then
  log "skipping lavapipe: needs root for apt (WebGPU tests will skip)"
elif ! command -v apt-get >/dev/null 2>&1; then
  log "skipping lavapipe: no apt-get on this system (WebGPU tests will skip)"
else
  fetch_lavapipe
  step_done "lavapipe (Mesa $(cat "$VK_DIR/mesa_version")) ready; the WebGPU tests run through tools/with-vulkan.sh"
fi

# ---------------------------------------------------------------------------
# 3b. Headless Chromium for the WebGPU browser test (driven by playwright-core,
#     which must never download a browser of its own). Needs root for apt.
# ---------------------------------------------------------------------------
if [[ -x /usr/bin/chromium ]]; then
  log "chromium present"
elif [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  log "skipping chromium: needs root and apt-get (the WebGPU browser test will skip)"
else
  log "installing chromium (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null ||
      warn "could not install chromium; the WebGPU browser test will skip"
  fi
  step_done "chromium installed"
fi

# ---------------------------------------------------------------------------
# 4. Build every package (turbo caches unchanged ones; its telemetry notice
#    only clutters the log).
# ---------------------------------------------------------------------------
log "pnpm build"
step_started=$SECONDS
TURBO_TELEMETRY_DISABLED=1 pnpm build
step_done "built"

log "done in ${SECONDS} s"
