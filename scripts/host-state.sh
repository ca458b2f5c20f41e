#!/usr/bin/env bash
# Proof that a run left the machine's own Docker Engine and network alone. `record FILE` writes a description
# of them before the run, `verify FILE` writes it again after the run and fails, showing the difference, when
# anything changed. .ci/run does both, so CI fails if a check stopped, replaced or reconfigured the engine.
#
# What is compared:
#   - the dockerd and containerd processes of this network namespace: PID, start time, executable, arguments
#     (a sandboxed engine of scripts/engine.sh runs in a namespace of its own and is not one of them)
#   - the engine as the docker CLI reaches it (DOCKER_HOST as given, else the default socket): version, API
#     version, data root, storage driver; its containers (id, name, image, state), networks and images
#   - /etc/docker and /usr/local/lib/docker: every entry's path, type, mode, owner and size, and each file's
#     SHA-256
#   - the network interfaces, the routes and, as root, the iptables rules (filter and nat tables)
#   - the sandboxes' traces: cgroups and temporary directories named applicant-validator-engine*
#
# Usage: scripts/host-state.sh record FILE
#        scripts/host-state.sh verify FILE
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# processes NAME: the processes called NAME in this network namespace, one line each.
processes() {
    local p own_net pid
    own_net="$(readlink /proc/self/ns/net)"
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == "$1" ]] || continue
        [[ "$(readlink "$p/ns/net" 2>/dev/null)" == "$own_net" ]] || continue
        pid="${p#/proc/}"
        # Field 22 of stat (counted after the parenthesised name) is the start time: a restarted daemon that got
        # the same PID back still differs.
        printf '%s pid %s started %s exe %s args %s\n' "$1" "$pid" \
            "$(sed 's/.*) //' "$p/stat" | cut -d ' ' -f 20)" "$(readlink "$p/exe" 2>/dev/null || echo '?')" \
            "$(tr '\0' ' ' <"$p/cmdline")"
    done
}

# list_files DIR: every entry under DIR with its metadata, and the SHA-256 of each regular file.
list_files() {
    if [[ ! -e "$1" ]]; then
        echo "$1: absent"
        return 0
    fi
    find "$1" -printf '%p %y %m %u:%g %s\n' | sort
    find "$1" -type f -print0 | sort -z | xargs -0 -r sha256sum
}

snapshot() {
    echo "== processes"
    processes dockerd
    processes containerd
    echo "== engine"
    if ! command -v docker >/dev/null; then
        echo "no docker CLI"
    elif ! docker version -f '{{.Server.Version}}' >/dev/null 2>&1; then
        echo "no engine answers at ${DOCKER_HOST:-the default socket}"
    else
        docker version -f 'server {{.Server.Version}} API {{.Server.APIVersion}}'
        docker info -f 'data root {{.DockerRootDir}} storage {{.Driver}} id {{.ID}}'
        echo "-- containers"
        docker ps -a --no-trunc --format '{{.ID}} {{.Names}} {{.Image}} {{.State}}' | sort
        echo "-- networks"
        docker network ls --no-trunc --format '{{.ID}} {{.Name}} {{.Driver}}' | sort
        echo "-- images"
        docker images -a --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}' | sort
    fi
    echo "== files"
    list_files /etc/docker
    list_files /usr/local/lib/docker
    echo "== network"
    ip -o link show | awk -F': ' '{ print $2 }' | sort
    ip route show
    if [[ "$(id -u)" != 0 ]]; then
        echo "iptables: not root, not compared"
    elif command -v iptables >/dev/null; then
        iptables -S 2>/dev/null
        iptables -t nat -S 2>/dev/null
    fi
    echo "== sandbox traces"
    find /sys/fs/cgroup -maxdepth 2 -type d -name 'applicant-validator-engine*' 2>/dev/null | sort
    find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'applicant-validator-engine.*' 2>/dev/null | sort
}

# summary FILE: one line on what a record holds.
summary() {
    awk '/^dockerd pid/ { d = d (d ? ", " : "") "dockerd pid " $3 }
        /^server / { s = "Docker " $2 " (API " $4 ")" }
        /^== / { sec = "" }
        /^-- / { sec = $2; next }
        sec != "" { n[sec]++ }
        END { printf "%s, %s, %d containers, %d networks, %d images", d ? d : "no dockerd", s ? s : "no engine",
              n["containers"], n["networks"], n["images"] }' "$1"
}

case "${1:-} ${2:-}" in
    "record "?*)
        snapshot >"$2"
        log "recorded: $(summary "$2")"
        ;;
    "verify "?*)
        [[ -f "$2" ]] || die "no record at $2 (scripts/host-state.sh record FILE, before the run)"
        after="$(mktemp)"
        trap 'rm -f "$after"' EXIT
        snapshot >"$after"
        if ! diff -u --label before --label after "$2" "$after" >&2; then
            die "the machine's Docker Engine, its files or the network changed during the run (diff above)"
        fi
        log "unchanged since the start: $(summary "$after"); /etc/docker, /usr/local/lib/docker, interfaces," \
            "routes and iptables rules as they were; no sandbox left"
        ;;
    *) die "usage: scripts/host-state.sh record FILE | verify FILE" ;;
esac
