#!/usr/bin/env bash
# The training image built and run with podman on a host that reaches no image registry (tests, CI, air-gapped
# clusters): the Dockerfile's BASE_IMAGE is a minimal Debian made here by debootstrap, and the build's pip reads
# the host's pip configuration (local wheelhouses, constraints, certificates), so nothing but Debian's and
# PyPI's mirrors (or nothing at all, with a complete local wheelhouse) is needed.
#
#   scripts/container.sh base             make the Debian base image once per recipe (keyed); prints its name
#   scripts/container.sh build IMAGE      build the Dockerfile on that base into IMAGE (a localhost/ name)
#   scripts/container.sh run ARGS...      podman run ARGS... with the options this host needs (printed to stderr)
#   scripts/container.sh images           list the images this script made (bases, builds, cached layers)
#   scripts/container.sh clean [IMAGE]    remove IMAGE; without IMAGE every image this script made, caches too
#
# Needs root (rootful podman, debootstrap) and apt-get to install podman, runc and debootstrap when missing.
# Kept on purpose between calls, as a cache keyed by their inputs: the base image (alexnet-pipeline-base:<key>)
# and the Dockerfile's dependency layer (6.6 GB; podman's layer cache rebuilds it when pyproject.toml,
# scripts/install.sh or the host's pip inputs change), tagged alexnet-pipeline-cache:deps; `clean` removes both.
# Environment: CONTAINER_SUITE (Debian suite, default bookworm: its python3 is 3.11, as the local torch wheels
# need), DEBIAN_MIRROR (default http://deb.debian.org/debian), CONTAINER_HOST_PIP=0 (build with the base's own
# pip settings only), CONTAINER_PIP_CONSTRAINTS (a constraints file for the build's pip, e.g. a `pip freeze`).
set -euo pipefail

# shellcheck source=scripts/messages.sh
. "$(dirname "$0")/messages.sh" container "{base | build IMAGE | run PODMAN_RUN_ARGS... | images | clean [IMAGE]}"

[ $# -ge 1 ] || usage
action=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
suite=${CONTAINER_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
label=org.alexnet-pipeline.made-by=scripts/container.sh
cache_image=localhost/alexnet-pipeline-cache:deps
# Bump when the base recipe below changes: the key names the image, so a new recipe makes a new base.
base_recipe=1

scratch=()
trap 'rm -rf "${scratch[@]}"' EXIT

install_packages() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || die "${missing[*]} not installed and installing needs root: run as root or 'apt-get install ${missing[*]}'"
  command -v apt-get >/dev/null || die "${missing[*]} not installed and apt-get is unavailable: install them by hand"
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # another installer (a test fixture, a user) may hold dpkg's lock: wait for it rather than fail
  apt-get -o DPkg::Lock::Timeout=600 update -qq </dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

# What this host needs, found by trying (documented in docs/cluster.md):
# - runc: Debian 12's crun refuses a hybrid cgroup v1 + v2 layout ("cgroups in hybrid mode not supported");
# - cgroupfs and file events: no systemd here;
# - explicit ulimits: podman's defaults (nofile 1048576, nproc 4194304) exceed this host's hard limits, and
#   the container may not raise them without CAP_SYS_RESOURCE; nproc above the pid space fails too.
podman_flags=(--runtime runc --cgroup-manager cgroupfs --events-backend file)
podman_() { podman "${podman_flags[@]}" "$@"; }

ulimit_args() {
  local nofile nproc pid_max
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  pid_max=$(cat /proc/sys/kernel/pid_max)
  [ "$nofile" = unlimited ] && nofile=1048576
  { [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; } && nproc=$pid_max
  echo "--ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
}

base_image() {
  local key
  key=$(printf '%s\n' "$base_recipe" "$suite" "$mirror" | sha256sum | cut -c1-12)
  echo "localhost/alexnet-pipeline-base:$suite-$key"
}

make_base() {
  local image rootfs
  image=$(base_image)
  if podman_ image exists "$image"; then
    log "base image $image: cached"
    echo "$image"
    return
  fi
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  rootfs=$(mktemp -d /var/tmp/alexnet-base.XXXXXX)
  scratch+=("$rootfs" "$rootfs.log")
  trap 'rm -rf "${scratch[@]}"' EXIT # again: in $(make_base) this is a subshell, which has its own traps
  log "debootstrap $suite (minbase) from $mirror into $rootfs"
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
    { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (is the mirror $mirror reachable?)"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "importing $rootfs as $image"
  tar -C "$rootfs" --numeric-owner -c . |
    podman_ import --change 'CMD ["/bin/bash"]' --change "LABEL $label" - "$image" >/dev/null
  # An older recipe's or suite's base is no longer used by any build here.
  podman_ images --filter "reference=localhost/alexnet-pipeline-base" --format '{{.Repository}}:{{.Tag}}' |
    grep -vxF "$image" | while read -r old; do podman_ rmi "$old" >/dev/null 2>&1 || true; done
  echo "$image"
}

# The host's pip settings (`pip config list` and PIP_* variables) as one pip.conf for the build, every local
# path in them (wheelhouses, file:// indexes, constraints, the CA bundle) mounted read-only under /run/host-pip.
# Writes DIR/pip.conf and DIR/mounts (one "host:container" a line); prints a digest of what pip will see.
host_pip_config() {
  local dir=$1 python=${PYTHON:-python3}
  "$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip to read the host's pip configuration (set PYTHON, or CONTAINER_HOST_PIP=0)"
  "$python" - "$dir" "${CONTAINER_PIP_CONSTRAINTS:-}" <<'PY'
import configparser, hashlib, os, re, subprocess, sys
from pathlib import Path

out, extra_constraints = Path(sys.argv[1]), sys.argv[2]
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
scopes: dict[str, dict[str, str]] = {"other": {}, "global": {}, ":env:": {}}
for line in listed.splitlines():  # section.key='value'; ":env:" are PIP_* variables, which win over files
    match = re.fullmatch(r"([:\w-]+)\.([\w-]+)='(.*)'", line.strip())
    if match:
        scopes.get(match[1], scopes["other"])[match[2]] = match[3]
values = {**scopes["other"], **scopes["global"], **scopes[":env:"]}
mounts: dict[str, str] = {}
digest = hashlib.sha256()
if extra_constraints:  # copied beside pip.conf (mounted at /run/host-pip/build): a fixed path, a stable digest
    constraints = Path(extra_constraints).read_bytes()
    (out / "constraints.txt").write_bytes(constraints)
    digest.update(constraints)

def carry(path: str) -> str:
    real = os.path.realpath(path)
    if not os.path.exists(real):
        return path
    inside = "/run/host-pip" + real
    mounts[real] = inside
    if os.path.isdir(real):  # the listing, not the gigabytes: a new or changed wheel changes it
        for root, _, files in sorted(os.walk(real)):
            for name in sorted(files):
                stat = os.stat(os.path.join(root, name))
                digest.update(f"{root}/{name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    else:
        digest.update(Path(real).read_bytes())
    return inside

def rewrite(token: str) -> str:
    if token.startswith("file://"):  # an index: its pages link to files beside it (../../files/x.whl)
        index = os.path.realpath(token.removeprefix("file://"))
        carry(os.path.dirname(index))
        return "file:///run/host-pip" + index
    return carry(token) if token.startswith("/") else token

config = configparser.ConfigParser(interpolation=None)
config["global"] = {key: " ".join(rewrite(t) for t in value.split()) for key, value in sorted(values.items())}
if extra_constraints:
    config["global"]["constraint"] = f"{config['global'].get('constraint', '')} /run/host-pip/build/constraints.txt"
with open(out / "pip.conf", "w") as handle:
    config.write(handle)
digest.update((out / "pip.conf").read_bytes())
# A folder inside another carried folder is already there.
kept = [p for p in mounts if not any(p != q and p.startswith(q + "/") for q in mounts)]
(out / "mounts").write_text("".join(f"{p}:{mounts[p]}\n" for p in kept))
print(digest.hexdigest()[:16])
PY
}

build() {
  [ $# -eq 1 ] || usage
  local image=$1 base work digest started mounts=() args=()
  [[ "$image" == localhost/* ]] || die "IMAGE must be a local name (localhost/NAME:TAG), got '$image'"
  [ "$(id -u)" -eq 0 ] || die "build needs root here (rootful podman)"
  install_packages
  base=$(make_base)
  work=$(mktemp -d /var/tmp/alexnet-build.XXXXXX)
  scratch+=("$work")
  if [ "${CONTAINER_HOST_PIP:-1}" = 1 ]; then
    digest=$(host_pip_config "$work")
    while IFS= read -r mount; do mounts+=(--volume "$mount:ro"); done <"$work/mounts"
    mounts+=(--volume "$work:/run/host-pip/build:ro")
    args+=(--build-arg PIP_CONFIG_FILE=/run/host-pip/build/pip.conf --build-arg "DEPS_INPUTS=$digest")
    log "build pip: the host's settings ($(grep -c . "$work/mounts") local path(s) mounted, digest $digest)"
  fi
  started=$SECONDS
  log "building $image from $base (podman build --layers; the dependency layer is cached between builds)"
  # --format docker: the OCI format has no SHELL, and the Dockerfile's RUN lines rely on bash -o pipefail.
  # shellcheck disable=SC2046
  podman_ build --format docker --layers --network host --pull=never $(ulimit_args) \
    --build-arg "BASE_IMAGE=$base" --label "$label" "${args[@]}" "${mounts[@]}" \
    --file "$repo/Dockerfile" --tag "$image" "$repo" >&2
  log "built $image in $((SECONDS - started)) s"
  keep_cache "$image"
}

# Podman keeps every step of a build as an untagged image (the layer cache), and `podman rmi IMAGE` removes
# IMAGE's untagged ancestors with it. So the dependency layer (6.6 GB) gets a tag of its own, $cache_image,
# and survives the removal of the images built on it; the small steps after it go with their image.
# Then this script's other untagged images (an older dependency layer, steps of failed builds) are removed.
# Other tagged images stay: they are someone's to remove (`clean`).
keep_cache() {
  local plan deps stale
  # One inspect of every image of this script (podman calls take a second each here), sorted out in Python.
  # shellcheck disable=SC2046
  plan=$(podman_ image inspect "$1" $(podman_ images --all --quiet --filter "label=$label") | python3 -c '
import json, sys
cache_image = sys.argv[1]  # its current holder, an older dependency layer, is stale once IMAGE has its own
images = json.load(sys.stdin)
by_id = {image["Id"]: image for image in images}
chain, deps, image = set(), None, images[0]
while image is not None:
    chain.add(image["Id"])
    if deps is None and "INSTALL_ONLY_DEPS=1" in image["History"][-1].get("created_by", ""):
        deps = image["Id"]
    image = by_id.get(image.get("Parent"))
stale = [i for i in by_id if i not in chain and not set(by_id[i]["RepoTags"] or ()) - {cache_image}]
print(deps or "")
print(" ".join(sorted(stale, key=lambda i: by_id[i]["Created"], reverse=True)))  # children first
' "$cache_image")
  deps=$(sed -n 1p <<<"$plan")
  stale=$(sed -n 2p <<<"$plan")
  [ -n "$deps" ] || die "no step of $1 installs the dependencies (INSTALL_ONLY_DEPS=1): has the Dockerfile changed?"
  podman_ tag "$deps" "$cache_image"
  # Removing a child may already have removed its untagged parents: --ignore.
  # shellcheck disable=SC2086
  [ -z "$stale" ] || podman_ rmi --ignore $stale >/dev/null
  log "dependency layer ${deps:0:12} kept as $cache_image; $(wc -w <<<"$stale") stale cached image(s) removed"
}

run() {
  [ $# -ge 1 ] || usage
  local options
  options=$(ulimit_args)
  log "podman run --network host $options $*"
  # shellcheck disable=SC2086
  exec podman "${podman_flags[@]}" run --network host $options "$@"
}

images() {
  podman_ images --all --filter "label=$label" --format '{{.ID}} {{.Repository}}:{{.Tag}} {{.Size}}'
}

clean() {
  if [ $# -eq 1 ]; then
    podman_ rmi "$1" >/dev/null && log "removed $1"
    return
  fi
  [ $# -eq 0 ] || usage
  local ids
  ids=$(podman_ images --all --quiet --filter "label=$label" | sort -u)
  [ -n "$ids" ] || { log "no images of this script"; return; }
  # shellcheck disable=SC2086
  podman_ rmi --force --ignore $ids >/dev/null
  log "removed $(echo "$ids" | wc -l) image(s), bases and cached layers included"
}

case "$action" in
  base) make_base ;;
  build) build "$@" ;;
  run) run "$@" ;;
  images) images ;;
  clean) clean "$@" ;;
  *) usage ;;
esac
