#!/usr/bin/env bash
# A Docker Engine new enough for the image checks, without touching the machine's own engine.
#
# Why: the image's `HEALTHCHECK --start-interval` (a probe every 100 ms while the container starts, so it is
# healthy within about half a second) needs Docker Engine 25+ (API 1.44), and compose.yaml's start_interval
# needs Compose v2.20+. Debian bookworm ships Docker 20.10 (API 1.41) and Compose 1.29. A project's checks
# may not stop, replace or reconfigure the machine's dockerd, so instead:
#
# - The machine's engine (the one DOCKER_HOST names, or the default socket) is used as it is when it speaks
#   API 1.44 or newer, unless ENGINE_SANDBOX=1.
# - Otherwise a sandboxed engine starts beside it: Debian trixie's dockerd 26.1 and containerd 1.7, bookworm's
#   runc, tini as docker-init. Its socket, data root, exec root, pidfile, log and containerd's state and socket
#   all live in one private directory that root owns (mktemp -d, mode 0700; 0711 when the caller is not root,
#   so the caller can reach the socket). dockerd runs with an emptied environment and PATH set to that
#   directory's bin/ and the system directories, with an empty --config-file (the machine's
#   /etc/docker/daemon.json is not read) and its own containerd, in a network namespace and a mount namespace
#   of its own: its bridge, routes, loopback and (unused) iptables tables are not the machine's, and
#   containerd's hard-wired /run/containerd is a tmpfs of the sandbox. It runs with --iptables=false
#   --ip-forward=false --ip-masq=false: the checks need no NAT or forwarding (containers talk to each other
#   inside one bridge; published ports are served by docker-proxy on the sandbox's own 127.0.0.1).
# - The docker CLI and Compose v2 always come from the pinned packages, unpacked into that directory: the
#   CLI first on PATH, Compose as the explicit path $COMPOSE. Nothing is installed system-wide.
#
# Every .deb is downloaded from the Debian mirror apt already uses (ENGINE_MIRROR to override), kept in
# ENGINE_CACHE, copied into the private directory and checked there against the SHA-256 pinned below before
# it is unpacked, on every run. When the archive drops a pinned version, the download fails: update the pins
# (docs/ci.md says how).
#
# Usage: scripts/engine.sh run CMD [ARG...]   up, CMD against the engine, then down (also when CMD fails or
#                                             the run is interrupted); exits with CMD's status. With the
#                                             sandbox, CMD runs in its network namespace (as the caller), so
#                                             127.0.0.1 reaches the published ports; it has no network beyond
#                                             the sandbox. CMD starts in the caller's working directory.
#        scripts/engine.sh up                 prepare (and start the sandbox if needed); prints `export`
#                                             lines to eval: DOCKER_HOST, DOCKER_CONFIG, PATH, COMPOSE,
#                                             ENGINE_DIR, ENGINE_KIND (host | sandbox), ENGINE_PID
#        scripts/engine.sh down [DIR]         stop the sandbox and remove DIR (default $ENGINE_DIR)
#        scripts/engine.sh check              whether the engine DOCKER_HOST names, and the docker CLI on
#                                             PATH, speak API 1.44+; one line; exit 1 if not (`--check` too)
#
# Environment: ENGINE_SANDBOX (auto, the default, or 1: the sandbox even when the machine's engine is new
# enough; .ci/run sets 1 so that CI exercises it everywhere), ENGINE_CACHE, ENGINE_MIRROR.
# The sandbox needs root (through sudo when the caller is not root), util-linux's unshare and nsenter, and
# iproute2 (installed with apt when missing).
set -euo pipefail
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
CALLER_DIR="$PWD"
cd "$(dirname "$SELF")/.."
. scripts/lib.sh
. scripts/tools.sh

MIN_API=1.44
START_TIMEOUT_S=60
STOP_TIMEOUT_S=30
ENGINE_SANDBOX="${ENGINE_SANDBOX:-auto}"
[[ "$ENGINE_SANDBOX" == auto || "$ENGINE_SANDBOX" == 1 ]] || die "ENGINE_SANDBOX is auto or 1, not '$ENGINE_SANDBOX'"
ENGINE_CACHE="${ENGINE_CACHE:-$TOOL_CACHE/engine-debs}"
DIR_PREFIX=applicant-validator-engine

# The packages, by their path under the mirror, and their SHA-256 (amd64). trixie: docker 26.1.5, Compose
# 2.26.1, containerd 1.7.24, tini 0.19.0 (only its static docker-init is used). runc is bookworm's: trixie's
# needs glibc 2.38, which bookworm does not have.
CLI_DEBS=(
    "pool/main/d/docker.io/docker-cli_26.1.5+dfsg1-9+deb13u1+b1_amd64.deb 596647bc4ffaaaf2e2321116b8a10f6a6086ada797c17a7117798cb391a72776"
    "pool/main/d/docker-compose/docker-compose_2.26.1-4_amd64.deb 47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea"
)
ENGINE_DEBS=(
    "pool/main/d/docker.io/docker.io_26.1.5+dfsg1-9+deb13u1+b1_amd64.deb 53ae1a99f15113f0a0d2226808ec0d24ee31b3b87b87ab8ec35be09a1a2ee13b"
    "pool/main/c/containerd/containerd_1.7.24~ds1-6+deb13u1_amd64.deb ed708deb96fe476a3bce4efa5c0538dfbcf717ab9a7c7944ba7260342c25899c"
    "pool/main/t/tini/tini_0.19.0-3+b8_amd64.deb a443b12107331f67836a64cb6efe1dd92d2765e15568eb4567dccb409a8cd2a0"
    "pool/main/r/runc/runc_1.1.5+ds1-1+deb12u1_amd64.deb a00351f8c0318de0b424ecf5cd0fdb69880a89f3511cae4f6fff7de3e57881c5"
)
# What the sandbox's dockerd finds first on its PATH (name in bin/ -> file in the unpacked packages).
ENGINE_BINS=(
    "dockerd usr/sbin/dockerd"
    "docker-proxy usr/sbin/docker-proxy"
    "containerd usr/bin/containerd"
    "containerd-shim-runc-v2 usr/bin/containerd-shim-runc-v2"
    "runc usr/sbin/runc"
    "docker-init usr/bin/tini-static"
)
COMPOSE_PATH=usr/libexec/docker/cli-plugins/docker-compose
SYSTEM_PATH=/usr/sbin:/usr/bin:/sbin:/bin

# api_at_least VERSION: VERSION >= MIN_API.
api_at_least() { [[ "$(printf '%s\n' "$MIN_API" "$1" | sort -V | head -n 1)" == "$MIN_API" ]]; }

# --- check ---------------------------------------------------------------------------------------------------
cmd_check() {
    local server client what
    command -v docker >/dev/null || die "no docker CLI on PATH (scripts/engine.sh run CMD provides one)"
    server="$(docker version -f '{{.Server.APIVersion}}' 2>/dev/null)" ||
        die "no Docker Engine answers at ${DOCKER_HOST:-the default socket}"
    client="$(docker version -f '{{.Client.DefaultAPIVersion}}' 2>/dev/null || true)"
    what="Docker Engine $(docker version -f '{{.Server.Version}}') (API $server)"
    case "${ENGINE_KIND:-}" in
        sandbox) what="$what, the sandboxed engine of scripts/engine.sh" ;;
        host) what="$what, this machine's engine" ;;
    esac
    if ! api_at_least "$server"; then
        die "$what is older than API $MIN_API (Docker 25), which the image's HEALTHCHECK --start-interval" \
            "needs; run the command through scripts/engine.sh run"
    fi
    if [[ -z "$client" ]] || ! api_at_least "$client"; then
        die "the docker CLI ($(command -v docker), API ${client:-unknown}) is older than API $MIN_API;" \
            "run the command through scripts/engine.sh run"
    fi
    log "$what; CLI API $client"
}

# --- what an earlier version of this script left behind -----------------------------------------------------
# That version stopped the machine's dockerd and started trixie's from ~/.cache/applicant-validator/engine
# in its place, with the same arguments. Nothing here undoes that on its own: it says what is found and how
# to put the distribution's dockerd back (docs/ci.md has the same steps).
warn_leftovers() {
    local pid exe args out
    for pid in $(host_dockerd_pids); do
        exe="$(as_root readlink "/proc/$pid/exe" 2>/dev/null || true)"
        [[ "$exe" == */applicant-validator/engine/docker.io/* ]] || continue
        args="$(as_root tr '\0' ' ' <"/proc/$pid/cmdline" | cut -d ' ' -f 2-)"
        out="$(as_root readlink "/proc/$pid/fd/1" 2>/dev/null || true)"
        log "WARNING: this machine's dockerd (pid $pid) runs $exe: an earlier scripts/engine.sh stopped the"
        log "distribution's dockerd and started this one in its place. It is left running. To put the"
        log "distribution's back, started as before (these are the arguments and the log it was given; docs/ci.md):"
        log "  kill -TERM $pid    # it stops its containers; wait until the process has gone"
        if [[ "$args" == *fd://* ]]; then
            log "  systemctl restart docker.socket docker.service    # socket-activated, as systemd started it"
        else
            log "  setsid -f /usr/sbin/dockerd ${args% } >>${out:-/var/log/dockerd.log} 2>&1 </dev/null"
        fi
    done
    if [[ -d "$TOOL_CACHE/engine/docker.io" ]]; then
        log "note: $TOOL_CACHE/engine holds the unpacked engine of an earlier scripts/engine.sh; nothing uses it"
        log "once that dockerd is gone: rm -rf $TOOL_CACHE/engine"
    fi
    out=/usr/local/lib/docker/cli-plugins/docker-compose
    if [[ -x "$out" ]] && ! dpkg -S "$out" >/dev/null 2>&1 &&
        [[ "$("$out" version --short 2>/dev/null || true)" == 2.26.1-4 ]]; then
        log "note: $out is trixie's Compose 2.26.1, which an earlier scripts/engine.sh installed and no package"
        log "owns; the checks do not use it (rm $out, unless something else here does)"
    fi
    for out in "${TMPDIR:-/tmp}/$DIR_PREFIX".*; do
        [[ -d "$out" && "$out" != "${ENGINE_DIR:-}" ]] || continue
        log "note: $out is the sandbox of another or an interrupted run; scripts/engine.sh down $out removes it"
    done
}

# host_dockerd_pids: the dockerd processes in this network namespace (a sandbox's is in its own).
host_dockerd_pids() {
    local p own_net
    own_net="$(readlink /proc/self/ns/net)"
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == dockerd ]] || continue
        [[ "$(as_root readlink "$p/ns/net" 2>/dev/null)" == "$own_net" ]] && echo "${p#/proc/}"
    done
    return 0
}

# --- packages ------------------------------------------------------------------------------------------------
# The mirror this system's apt uses for its own release, so that no host is named here.
debian_mirror() {
    local codename uri
    if [[ -n "${ENGINE_MIRROR:-}" ]]; then
        echo "${ENGINE_MIRROR%/}"
        return 0
    fi
    codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)"
    # shellcheck disable=SC2016 # apt's own $(...) fields, not the shell's
    uri="$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' 2>/dev/null |
        awk -v c="$codename" '$1 == c { print $2; exit }')"
    uri="${uri:-http://deb.debian.org/debian}"
    echo "${uri%/}"
}

# unpack_debs DIR "POOL_PATH SHA256"...: each package downloaded into the cache unless it is there, copied
# into DIR/debs (which only root can write), checked there against its pinned sum and unpacked into
# DIR/root. A cached file that fails the check is downloaded again once.
unpack_debs() {
    local dir="$1" entry path sum file copy mirror="" attempt from
    shift
    mkdir -p "$ENGINE_CACHE"
    for entry in "$@"; do
        read -r path sum <<<"$entry"
        file="$ENGINE_CACHE/${path##*/}"
        copy="$dir/debs/${path##*/}"
        for attempt in 1 2; do
            from="the cache"
            if [[ ! -f "$file" ]]; then
                mirror="${mirror:-$(debian_mirror)}"
                log "downloading $mirror/$path"
                curl -fsSL --retry 2 -o "$file.part" "$mirror/$path" || die "download of $mirror/$path failed"
                mv "$file.part" "$file"
                from="$mirror"
            fi
            as_root install -m 0644 "$file" "$copy"
            if [[ "$(as_root sha256sum "$copy" | cut -d ' ' -f 1)" == "$sum" ]]; then
                break
            fi
            as_root rm -f "$copy"
            rm -f "$file"
            ((attempt == 1)) || die "${path##*/} from $from does not match its pinned SHA-256 $sum; not unpacked"
            log "${path##*/} from $from does not match its pinned SHA-256; downloading it again"
        done
        as_root dpkg-deb -x "$copy" "$dir/root"
    done
}

# --- up ------------------------------------------------------------------------------------------------------
# host_api: the API version of the machine's engine, or nothing when none answers.
host_api() { timeout 20 "$1/cli/docker" version -f '{{.Server.APIVersion}}' 2>/dev/null || true; }

cmd_up() {
    local dir kind api pid entry name path args netns info
    [[ "$(dpkg --print-architecture)" == amd64 ]] || die "the pinned packages are for amd64"
    command -v curl >/dev/null || apt_install curl
    warn_leftovers

    dir="$(as_root mktemp -d "${TMPDIR:-/tmp}/$DIR_PREFIX.XXXXXXXX")"
    # A failure before the end of `up` leaves nothing behind.
    trap 'cmd_down "$dir" >&2' EXIT
    ((${#dir} <= 60)) || die "$dir is too long a path for the sockets under it (set TMPDIR to a shorter one)"
    [[ "$(id -u)" == 0 ]] || as_root chmod 0711 "$dir"
    as_root mkdir "$dir/debs" "$dir/root" "$dir/cli" "$dir/bin"
    as_root install -d -m 0700 -o "$(id -u)" -g "$(id -g)" "$dir/cli-config"
    unpack_debs "$dir" "${CLI_DEBS[@]}"
    as_root ln -s ../root/usr/bin/docker "$dir/cli/docker"

    api="$(host_api "$dir")"
    if [[ "$ENGINE_SANDBOX" != 1 && -n "$api" ]] && api_at_least "$api"; then
        kind=host
        log "this machine's Docker Engine speaks API $api: the checks use it as it is"
    else
        kind=sandbox
        if [[ "$ENGINE_SANDBOX" == 1 ]]; then
            log "ENGINE_SANDBOX=1: starting the sandboxed engine (this machine's speaks API" \
                "${api:-none: it does not answer})"
        elif [[ -n "$api" ]]; then
            log "this machine's Docker Engine speaks API $api, older than $MIN_API: starting a sandboxed engine" \
                "beside it"
        else
            log "no Docker Engine answers at ${DOCKER_HOST:-the default socket}: starting a sandboxed engine"
        fi
        if ! command -v unshare >/dev/null || ! command -v nsenter >/dev/null; then
            die "the sandbox needs util-linux's unshare and nsenter"
        fi
        command -v ip >/dev/null || apt_install iproute2
        unpack_debs "$dir" "${ENGINE_DEBS[@]}"
        for entry in "${ENGINE_BINS[@]}"; do
            read -r name path <<<"$entry"
            as_root ln -s "../root/$path" "$dir/bin/$name"
        done
        echo '{}' | as_root tee "$dir/daemon.json" >/dev/null
        args=(--config-file "$dir/daemon.json" --host "unix://$dir/docker.sock" --data-root "$dir/data"
            --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" --userland-proxy-path "$dir/bin/docker-proxy"
            --iptables=false --ip-forward=false --ip-masq=false
            --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$DIR_PREFIX-${dir##*.}"
            --shutdown-timeout 5)
        [[ "$(id -u)" == 0 ]] || args+=(--group "$(id -g)")
        # setsid -f: the daemon outlives this script (until `down`). unshare gives it the namespaces; the shell
        # in between mounts the private /run and brings the namespace's loopback up before dockerd starts.
        # shellcheck disable=SC2016 # the inner shells expand their own arguments
        as_root env -i "PATH=$dir/bin:$SYSTEM_PATH" \
            sh -c 'log="$1"; shift; exec setsid -f "$@" >>"$log" 2>&1 </dev/null' sh "$dir/dockerd.log" \
            unshare --net --mount --propagation private -- \
            sh -ec 'mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run; ip link set lo up; exec "$@"' \
            sh "$dir/bin/dockerd" "${args[@]}"
        if ! wait_engine "$dir"; then
            as_root tail -n 20 "$dir/dockerd.log" >&2 || true
            die "the sandboxed dockerd did not answer within ${START_TIMEOUT_S}s (its log's last lines above)"
        fi
        pid="$(as_root cat "$dir/dockerd.pid")"
        netns="$(as_root readlink "/proc/$pid/ns/net")"
        echo "$netns" | as_root tee "$dir/netns" >/dev/null
        info='dockerd {{.ServerVersion}}, containerd {{.ContainerdCommit.ID}}, runc {{.RuncCommit.ID}},'
        info+=' storage {{.Driver}}, cgroup driver {{.CgroupDriver}}'
        info="$(DOCKER_HOST="unix://$dir/docker.sock" DOCKER_CONFIG="$dir/cli-config" \
            "$dir/cli/docker" info -f "$info")"
        log "sandboxed engine up: $info (pid $pid, $dir, network namespace $netns, no iptables)"
    fi

    {
        if [[ "$kind" == sandbox ]]; then
            # The machine's docker configuration (a context, TLS settings) must not send the CLI elsewhere.
            echo 'unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH'
            printf 'export DOCKER_HOST=%q DOCKER_CONFIG=%q\n' "unix://$dir/docker.sock" "$dir/cli-config"
        fi
        printf 'export PATH=%q\n' "$dir/cli:$PATH"
        printf 'export COMPOSE=%q\n' "$dir/root/$COMPOSE_PATH"
        printf 'export ENGINE_DIR=%q ENGINE_KIND=%q ENGINE_PID=%q\n' "$dir" "$kind" "${pid:-}"
    } | as_root tee "$dir/env"
    trap - EXIT
}

# wait_engine DIR: until the sandbox's socket answers, or its dockerd logged a fatal error, or the timeout.
wait_engine() {
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        DOCKER_HOST="unix://$1/docker.sock" DOCKER_CONFIG="$1/cli-config" "$1/cli/docker" version >/dev/null 2>&1 &&
            return 0
        as_root grep -q 'level=fatal' "$1/dockerd.log" 2>/dev/null && return 1
        sleep 0.2
    done
    return 1
}

# --- down ----------------------------------------------------------------------------------------------------
# Only a directory `up` made is removed: its name and its owner (root) are checked first.
cmd_down() {
    local dir="${1:-${ENGINE_DIR:-}}" pid netns name deadline p cg
    [[ -n "$dir" ]] || die "usage: scripts/engine.sh down DIR (or ENGINE_DIR set by up)"
    [[ -d "$dir" ]] || return 0
    [[ "$(basename "$dir")" == "$DIR_PREFIX".* && "$(stat -c %u "$dir")" == 0 ]] ||
        die "$dir is not a directory scripts/engine.sh up made"
    if [[ "$(id -u)" != 0 ]]; then
        # Signalling the daemon and its processes, removing its cgroups and its directory need root.
        as_root "$SELF" down "$dir"
        return
    fi
    pid="$(cat "$dir/dockerd.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$dir/root/usr/sbin/dockerd" ]]; then
        # Containers removed first, so that the daemon's own stop does not wait on each one's stop timeout.
        (
            export DOCKER_HOST="unix://$dir/docker.sock" DOCKER_CONFIG="$dir/cli-config"
            mapfile -t ids < <("$dir/cli/docker" ps -aq 2>/dev/null)
            ((${#ids[@]} == 0)) || "$dir/cli/docker" rm -f "${ids[@]}" >/dev/null 2>&1 || true
        )
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + STOP_TIMEOUT_S))
        while lib_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if lib_alive "$pid"; then
            log "the sandboxed dockerd (pid $pid) did not stop within ${STOP_TIMEOUT_S}s of SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # Whatever still runs in the sandbox's network namespace or from its files (a shim, a container process).
    netns="$(cat "$dir/netns" 2>/dev/null || true)"
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        [[ "$p" != "$$" && "$p" != "$BASHPID" ]] || continue
        if [[ -n "$netns" && "$(readlink "/proc/$p/ns/net" 2>/dev/null)" == "$netns" ]] ||
            [[ "$(readlink "/proc/$p/exe" 2>/dev/null)" == "$dir/"* ]]; then
            log "stopping pid $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c 1-80)), left by the sandbox"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    # The containers' cgroups go with them; their parent, made for this sandbox, is removed here.
    name="$DIR_PREFIX-${dir##*.}"
    for cg in /sys/fs/cgroup/"$name" /sys/fs/cgroup/*/"$name"; do
        [[ -d "$cg" ]] || continue
        rmdir "$cg" 2>/dev/null || log "could not remove the cgroup $cg"
    done
    # Its mounts were made in its own mount namespace, which ended with its last process.
    if grep -qF " $dir/" /proc/self/mounts; then
        die "mounts under $dir remain in this mount namespace; not removing it"
    fi
    rm -rf "$dir"
    [[ -n "$pid" ]] && log "sandboxed engine stopped and $dir removed"
    return 0
}

# --- run -----------------------------------------------------------------------------------------------------
cmd_run() {
    (($# > 0)) || die "usage: scripts/engine.sh run CMD [ARG...]"
    local env_lines status=0 vars runner=() child
    env_lines="$(cmd_up)"
    eval "$env_lines"
    trap 'cmd_down "$ENGINE_DIR"' EXIT
    if [[ "$ENGINE_KIND" == sandbox && "$(id -u)" == 0 ]]; then
        runner=(nsenter --net="/proc/$ENGINE_PID/ns/net" --)
    elif [[ "$ENGINE_KIND" == sandbox ]]; then
        # Entering a namespace needs root; the command itself runs as the caller, with the caller's environment
        # (sudo would reset it).
        mapfile -d '' vars < <(env -0)
        runner=(as_root nsenter --net="/proc/$ENGINE_PID/ns/net" -- setpriv --reuid="$(id -u)" --regid="$(id -g)"
            --init-groups -- env -i "${vars[@]}")
    fi
    # In the background and waited for, so that a SIGTERM or SIGINT to this script is handled at once (passed
    # on to the command, then the EXIT trap stops the engine) rather than after the command ends. Standard
    # input stays the caller's (`run bash` works).
    cd "$CALLER_DIR"
    "${runner[@]}" "$@" <&0 &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM
    trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 130' INT
    wait "$child" || status=$?
    exit "$status"
}

case "${1:-}" in
    run)
        shift
        cmd_run "$@"
        ;;
    up) cmd_up ;;
    down) cmd_down "${2:-}" ;;
    check | --check) cmd_check ;;
    *) die "usage: scripts/engine.sh run CMD [ARG...] | up | down [DIR] | check" ;;
esac
