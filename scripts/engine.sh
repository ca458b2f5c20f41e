#!/usr/bin/env bash
# Makes sure this machine's Docker Engine speaks API 1.44 or newer (Docker 25+) and that Compose v2 is there.
# The image's `HEALTHCHECK --start-interval` (probe every 100 ms while the container starts, so it is healthy
# within about half a second) needs both: older engines reject the flag when building with the legacy builder
# and ignore it when running, and Compose v1 rejects `start_interval` in compose.yaml.
#
# Debian bookworm ships Docker 20.10 (API 1.41) and Compose 1.29. When the running engine is older, this takes
# dockerd and docker-proxy from Debian trixie's docker.io package (pinned below), fetched with apt-get from
# the Debian archive the system already uses but with a private apt state (the system's apt configuration is
# not touched), unpacked into a cache directory. It stops the running dockerd and starts the new one in its
# place with the same arguments and log file, so the socket, the data root and the images stay as they were;
# bookworm's containerd, runc and docker-init serve it. Compose v2 (trixie's docker-compose) goes in as the
# docker CLI plugin. A second run finds both new enough and does nothing. With no engine running at all, it
# starts the new one (no arguments); with containers running, it stops rather than stop them. Needs root, or
# sudo.
#
# Usage: scripts/engine.sh           ensure both (prints one line for each)
#        scripts/engine.sh --check   only say whether the engine is new enough; exit 1 if it is not
#
# Environment (optional): ENGINE_CACHE (default ~/.cache/applicant-validator/engine).
set -euo pipefail

MIN_API=1.44
# Pinned: the trixie builds this was tried with. If the archive has moved on, the current build is taken and
# the line printed says which.
ENGINE_DEB_VERSION=26.1.5+dfsg1-9+deb13u1+b1
COMPOSE_DEB_VERSION=2.26.1-4
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
CACHE="${ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/applicant-validator/engine}"
START_TIMEOUT_S=60
STOP_TIMEOUT_S=60

die() {
    echo "engine: $*" >&2
    exit 1
}

sudo_cmd=()
if [[ "$(id -u)" != 0 ]]; then sudo_cmd=(sudo); fi

command -v docker >/dev/null || die "the docker CLI is not installed"

# api_at_least VERSION: whether VERSION >= MIN_API.
api_at_least() { [[ "$(printf '%s\n' "$MIN_API" "$1" | sort -V | head -n 1)" == "$MIN_API" ]]; }

server() { docker version -f "{{.Server.$1}}" 2>/dev/null; }

# --- --check -----------------------------------------------------------------------------------------------
if [[ "${1:-}" == --check ]]; then
    api="$(server APIVersion)" || die "no Docker Engine answers (scripts/engine.sh starts one)"
    if api_at_least "$api"; then
        echo "engine: Docker Engine $(server Version) (API $api), API $MIN_API or newer"
        exit 0
    fi
    die "Docker Engine $(server Version) (API $api) is older than API $MIN_API (Docker 25), which the image's HEALTHCHECK --start-interval needs; scripts/engine.sh replaces it"
fi
[[ $# == 0 ]] || die "usage: scripts/engine.sh [--check]"

# --- fetching a trixie package into the cache --------------------------------------------------------------
apt_dir="$CACHE/apt"
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
apt_updated=0

# The URI of the Debian archive this system's apt already uses for its own release, so no host is named here.
debian_uri() {
    local codename
    codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)"
    apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' |
        awk -v c="$codename" '$1 == c { print $2; exit }'
}

apt_update() {
    ((apt_updated)) && return 0
    local uri
    uri="$(debian_uri)"
    [[ -n "$uri" ]] || die "cannot tell which Debian archive apt uses (no Packages index for this release)"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" >"$apt_dir/sources.list"
    apt-get "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1 ||
        die "apt-get update for trixie failed: $(tail -n 3 "$apt_dir/update.log" | tr '\n' ' ')"
    apt_updated=1
}

# fetch_deb PACKAGE PINNED DIR: unpacks the package (the pinned version, else the archive's current one) into
# DIR unless DIR already holds it; prints the version unpacked.
fetch_deb() {
    local package="$1" pinned="$2" dir="$3" version debs
    if [[ -f "$dir/.version" ]]; then
        cat "$dir/.version"
        return 0
    fi
    apt_update
    debs="$CACHE/debs"
    mkdir -p "$debs"
    rm -f "$debs/${package}_"*.deb
    if ! (cd "$debs" && apt-get "${apt_opts[@]}" download "$package=$pinned" >"$apt_dir/download.log" 2>&1); then
        echo "engine: $package $pinned is no longer in the archive; taking the current build" >&2
        (cd "$debs" && apt-get "${apt_opts[@]}" download "$package" >"$apt_dir/download.log" 2>&1) ||
            die "apt-get download $package failed: $(tail -n 3 "$apt_dir/download.log" | tr '\n' ' ')"
    fi
    version="$(dpkg-deb -f "$debs/${package}_"*.deb Version)"
    rm -rf "$dir.tmp"
    dpkg-deb -x "$debs/${package}_"*.deb "$dir.tmp"
    echo "$version" >"$dir.tmp/.version"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    echo "$version"
}

# --- the engine --------------------------------------------------------------------------------------------
# dockerd_pid: the running dockerd, from its pid file (the default path) or, failing that, by its exact name.
dockerd_pid() {
    local pid
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    if [[ -n "$pid" && "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1)" == *dockerd ]]; then
        echo "$pid"
        return 0
    fi
    pgrep -xo dockerd
}

# exited PID: the process is gone, or a zombie (an init that does not reap leaves it in /proc).
exited() { [[ ! -e "/proc/$1" ]] || [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" == Z ]]; }

# wait_server VERSION: until `docker version` reports a server of VERSION, at most START_TIMEOUT_S.
wait_server() {
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        [[ "$(server Version || true)" == "$1" ]] && return 0
        sleep 0.2
    done
    return 1
}

# A dockerd that is still starting answers within a few seconds: give it that before deciding it is absent.
old_pid="$(dockerd_pid || true)"
api=""
if [[ -n "$old_pid" ]]; then
    for _ in $(seq 50); do
        api="$(server APIVersion)" && break
        sleep 0.2
    done
fi

if [[ -n "$api" ]] && api_at_least "$api"; then
    echo "engine: Docker Engine $(server Version) (API $api) is new enough; nothing to do"
else
    bin="$CACHE/docker.io"
    deb_version="$(fetch_deb docker.io "$ENGINE_DEB_VERSION" "$bin")"
    dockerd="$bin/usr/sbin/dockerd"
    new_version="$("$dockerd" --version | sed -n 's/^Docker version \([^,]*\),.*/\1/p')"
    [[ -n "$new_version" ]] || die "$dockerd does not run here: $(ldd "$dockerd" 2>&1 | grep 'not found' | tr '\n' ' ')"
    args=()
    log=/var/log/dockerd.log
    if [[ -n "$old_pid" ]]; then
        old_version="$(server Version || true)"
        running="$( (docker ps -q 2>/dev/null || true) | wc -l)"
        ((running == 0)) || die "$running containers are running; replacing dockerd would stop them, so stop them first"
        mapfile -d '' -t cmdline <"/proc/$old_pid/cmdline"
        args=("${cmdline[@]:1}")
        out="$("${sudo_cmd[@]}" readlink "/proc/$old_pid/fd/1" || true)"
        [[ "$out" == /* && -f "$out" ]] && log="$out"
        children="$(ps -o pid= --ppid "$old_pid" | tr -d ' ' || true)"
        "${sudo_cmd[@]}" kill -TERM "$old_pid"
        deadline=$((SECONDS + STOP_TIMEOUT_S))
        for pid in "$old_pid" $children; do
            while ! exited "$pid"; do
                ((SECONDS < deadline)) || die "dockerd $old_pid (or its containerd) did not exit within ${STOP_TIMEOUT_S}s of SIGTERM"
                sleep 0.2
            done
        done
        what="replaced Docker Engine ${old_version:-that did not answer} (API ${api:-?}, pid $old_pid)"
    else
        what="no Docker Engine was running; started one"
    fi
    # setsid -f: the daemon gets its own session, so it outlives this script and its terminal. docker-proxy
    # comes from the same package (first on PATH); containerd, runc and docker-init are bookworm's.
    "${sudo_cmd[@]}" sh -c 'log="$1"; shift; exec "$@" >>"$log" 2>&1 </dev/null' sh "$log" \
        env "PATH=$bin/usr/sbin:$bin/usr/bin:$PATH" setsid -f "$dockerd" "${args[@]}"
    wait_server "$new_version" ||
        die "dockerd $new_version did not answer within ${START_TIMEOUT_S}s; $log ends: $(tail -n 5 "$log" 2>/dev/null | tr '\n' ' ')"
    echo "engine: $what with dockerd $new_version (API $(server APIVersion), trixie docker.io $deb_version, args: ${args[*]:-none}, log $log)"
fi

# --- Compose v2 --------------------------------------------------------------------------------------------
compose_version="$(docker compose version --short 2>/dev/null || true)"
if [[ "$compose_version" =~ ^v?([0-9]+)\.([0-9]+) ]] &&
    ((BASH_REMATCH[1] > 2 || (BASH_REMATCH[1] == 2 && BASH_REMATCH[2] >= 20))); then
    echo "engine: Docker Compose $compose_version (v2.20+, knows start_interval); nothing to do"
else
    dir="$CACHE/docker-compose"
    deb_version="$(fetch_deb docker-compose "$COMPOSE_DEB_VERSION" "$dir")"
    "${sudo_cmd[@]}" install -D -m 0755 "$dir/usr/libexec/docker/cli-plugins/docker-compose" "$COMPOSE_PLUGIN"
    echo "engine: installed Docker Compose $(docker compose version --short) as $COMPOSE_PLUGIN (trixie docker-compose $deb_version)"
fi
