# shellcheck shell=bash
# Shared helpers of bin/test and bin/mlstack-dev. Source it from a script that runs
# under `set -euo pipefail`; it defines paths and functions and starts nothing.
#
# Overridable from the environment:
#   MLSTACK_PYTHON   interpreter used to create the venvs (default: python3, >= 3.10)
#   MLSTACK_RABBITMQ_MODE  system | user. Default: system as root (Debian's
#                    `rabbitmq-server -detached`), user otherwise (a private node with
#                    its data under .dev/rabbitmq, for machines where we are not root).

# shellcheck disable=SC2034  # the paths are used by the scripts that source this file
MLSTACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV_DIR="$MLSTACK_ROOT/.dev"
RUN_DIR="$DEV_DIR/run"
LOG_DIR="$DEV_DIR/logs"
CORE_VENV="$MLSTACK_ROOT/.venv"
EXAMPLE_BUNDLE="$MLSTACK_ROOT/example_bundle"
BUNDLE_VENV="$DEV_DIR/venvs/example_bundle-pub"
# Ansible, ansible-lint and the systemctl stand-in, for the deployment tests only.
DEPLOY_VENV="$DEV_DIR/venvs/deploy"
# The model registry server (MLflow + its basic-auth app), started by bin/mlstack-registry.
MLFLOW_VENV="$DEV_DIR/venvs/mlflow"
AMQP_HOST=127.0.0.1
AMQP_PORT=5672
AMQP_URL_DEFAULT="amqp://guest:guest@127.0.0.1:5672/%2F"
VENV_HASH_FILE=.mlstack-requirements.sha256
_LOG_TAG="$(basename "$0")"

# ---------------------------------------------------------------- logging
# Logs go to stderr so that stdout stays free for what a command reports.
log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$_LOG_TAG" "$*" >&2; }
warn() { log "WARNING: $*"; }
die() {
    log "ERROR: $*"
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Last lines of a log file, indented, to explain why a service did not come up.
show_log_tail() {
    local file=$1 lines=${2:-30}
    [ -f "$file" ] || return 0
    log "last lines of $file:"
    tail -n "$lines" "$file" | sed 's/^/    /' >&2
}

# ---------------------------------------------------------------- waiting
# port_open HOST PORT: true if something accepts TCP connections there. Plain bash
# (/dev/tcp), so it needs neither ss nor nc on a fresh machine.
port_open() {
    # shellcheck disable=SC2016  # $0/$1 expand in the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

_port_closed() { ! port_open "$1" "$2"; }

# wait_until TIMEOUT_S DESCRIPTION COMMAND...: polls COMMAND every 0.5 s.
wait_until() {
    local timeout_s=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout_s))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${timeout_s}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

# wait_for_port HOST PORT TIMEOUT_S
wait_for_port() {
    wait_until "$3" "$1:$2 to accept connections" port_open "$1" "$2"
}

# free_port HOST FIRST LAST: prints the first port in FIRST..LAST nobody listens on.
free_port() {
    local host=$1 port
    for ((port = $2; port <= $3; port++)); do
        if ! port_open "$host" "$port"; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# ---------------------------------------------------------------- system packages
_APT_UPDATED=0

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# apt_install PKG...: installs the packages not installed yet. `apt-get update` runs
# at most once per script run, and only when something is missing.
# _missing_debs PKG...: the ones not installed, one per line.
_missing_debs() {
    local pkg
    for pkg in "$@"; do
        pkg_installed "$pkg" || echo "$pkg"
    done
}

apt_install() {
    local missing
    mapfile -t missing < <(_missing_debs "$@")
    ((${#missing[@]})) || return 0
    is_root || die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    # bin/test-all runs parts side by side: one apt-get at a time (dpkg's lock would fail
    # the other), and what the other installed meanwhile is not installed again.
    mkdir -p "$DEV_DIR"
    exec 7>"$DEV_DIR/apt.lock"
    flock 7
    mapfile -t missing < <(_missing_debs "${missing[@]}")
    if ((${#missing[@]})); then
        _apt_get_install "${missing[@]}"
    fi
    flock -u 7
    exec 7>&-
}

_apt_get_install() {
    if ((_APT_UPDATED == 0)); then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        _APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# The interpreter the venvs are made from; checks version and that it can make a venv
# with pip (Debian's python3 needs the python3-venv package for that).
bootstrap_python() {
    PYTHON_BIN=${MLSTACK_PYTHON:-python3}
    command -v "$PYTHON_BIN" >/dev/null || apt_install python3
    command -v "$PYTHON_BIN" >/dev/null || die "no $PYTHON_BIN on PATH"
    "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "$PYTHON_BIN is $("$PYTHON_BIN" -V 2>&1); mlstack needs Python >= 3.10"
    if ! "$PYTHON_BIN" -c 'import ensurepip, venv' 2>/dev/null; then
        local ver
        ver=$("$PYTHON_BIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        apt_install python3-venv "python$ver-venv"
    fi
}

# ---------------------------------------------------------------- virtualenvs
# venv_ensure DIR "INPUT FILES" PIP_ARGS...: (re)creates the venv DIR and runs
# `pip install PIP_ARGS` in it, unless the venv was built from the same inputs:
# the sha256 of the input files, the pip arguments, the venv path and the interpreter
# is stored in DIR/.mlstack-requirements.sha256 (written last, so an interrupted
# build is redone). Source edits need no rebuild: the mlstack package is editable.
venv_ensure() {
    local dir=$1 inputs=$2
    shift 2
    local want have="" f
    # shellcheck disable=SC2086  # INPUT FILES is a space-separated list on purpose
    want=$({
        for f in $inputs; do
            printf '== %s\n' "${f#"$MLSTACK_ROOT"/}"
            cat "$f"
        done
        printf '== pip %s\n== venv %s\n== python %s\n' "$*" "$dir" "$("$PYTHON_BIN" -VV 2>&1)"
    } | sha256sum | cut -d' ' -f1)
    [ -f "$dir/$VENV_HASH_FILE" ] && have=$(cat "$dir/$VENV_HASH_FILE")
    if [ "$have" = "$want" ] && "$dir/bin/python" -c '' 2>/dev/null; then
        log "venv ${dir#"$MLSTACK_ROOT"/} is up to date"
        return 0
    fi
    if [ -d "$dir" ]; then
        log "requirements changed: rebuilding venv ${dir#"$MLSTACK_ROOT"/}"
        rm -rf "$dir"
    else
        log "creating venv ${dir#"$MLSTACK_ROOT"/}"
    fi
    mkdir -p "$(dirname "$dir")"
    "$PYTHON_BIN" -m venv "$dir"
    local started=$SECONDS
    # The grep drops pip's notes about configured local index folders that lack a
    # package (noise of some machines); pipefail keeps pip's own exit status.
    (
        set -o pipefail
        cd "$MLSTACK_ROOT" &&
            "$dir/bin/python" -m pip install --no-input --progress-bar off -q "$@" 2>&1 |
            { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; }
    ) >&2 || die "pip install into ${dir#"$MLSTACK_ROOT"/} failed"
    printf '%s\n' "$want" >"$dir/$VENV_HASH_FILE"
    log "venv ${dir#"$MLSTACK_ROOT"/} ready ($((SECONDS - started))s)"
}

# The core venv (.venv: API, CLI, test tools) and the example bundle's Pub venv
# (its own requirements + the worker runtime). A lock keeps bin/test and
# bin/mlstack-dev from building the same venv at once.
bootstrap_venvs() {
    bootstrap_python
    local bundle_req="$EXAMPLE_BUNDLE/worker_pub/requirements.txt"
    [ -f "$bundle_req" ] || die "missing $bundle_req"
    mkdir -p "$DEV_DIR"
    exec 8>"$DEV_DIR/venvs.lock"
    flock 8
    venv_ensure "$CORE_VENV" \
        "$MLSTACK_ROOT/requirements.txt $MLSTACK_ROOT/requirements-dev.txt $MLSTACK_ROOT/services/pyproject.toml" \
        -r requirements-dev.txt -e './services[api,worker,cli]'
    venv_ensure "$BUNDLE_VENV" \
        "$bundle_req $MLSTACK_ROOT/services/pyproject.toml" \
        -r example_bundle/worker_pub/requirements.txt -e './services[worker]'
    # Same arguments as bin/mlstack-registry uses, so both agree on when it is up to date.
    venv_ensure "$MLFLOW_VENV" "$MLSTACK_ROOT/requirements-mlflow.txt" -r requirements-mlflow.txt
    flock -u 8
    exec 8>&-
}

# bootstrap_deploy_venv: the venv of the deployment tests (bin/test only).
bootstrap_deploy_venv() {
    exec 8>"$DEV_DIR/venvs.lock"
    flock 8
    venv_ensure "$DEPLOY_VENV" "$MLSTACK_ROOT/requirements-deploy.txt" -r requirements-deploy.txt
    flock -u 8
    exec 8>&-
}

# prepare_suite: what bin/test needs before its broker starts (bin/test-all runs it once
# before its lanes, so the parts never install side by side).
prepare_suite() {
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    apt_install chromium chromium-driver # headless browser tests of /dashboard and /docs (selenium)
    bootstrap_venvs
    bootstrap_deploy_venv
}

# prepare_host_tests: what bin/test-hosts needs (root: debootstrap, systemd-nspawn).
prepare_host_tests() {
    apt_install debootstrap systemd-container slirp4netns socat openssh-client iproute2
    bootstrap_venvs
    bootstrap_deploy_venv
}

# ---------------------------------------------------------------- pidfiles
# pid_running PIDFILE: true if the pid in PIDFILE is alive.
pid_running() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [[ "$pid" =~ ^[0-9]+$ ]] && ! _pid_gone "$pid"
}

# start_bg PIDFILE LOGFILE WORKDIR COMMAND...: starts COMMAND in the background, in a
# session of its own (so stop_pidfile can end its children too), stdout+stderr
# appended to LOGFILE. Settings reach it through the environment the caller exported
# in a subshell, never through its command line (which every user can read).
start_bg() {
    local pidfile=$1 logfile=$2 workdir=$3
    shift 3
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
    # A background subshell is no process-group leader, so setsid execs without forking:
    # $! is the pid of COMMAND itself.
    (cd "$workdir" && exec setsid "$@" >>"$logfile" 2>&1 </dev/null) &
    echo $! >"$pidfile"
}

# stop_pidfile NAME PIDFILE [TIMEOUT_S]: SIGTERM to the process group, SIGKILL after
# the timeout; removes the pidfile. Quiet if it is not running.
stop_pidfile() {
    local name=$1 pidfile=$2 timeout_s=${3:-20} pid
    if ! pid_running "$pidfile"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    # Signal the group when the process leads one (started by start_bg), else the pid.
    local target=$pid
    [ "$(_proc_stat_field "$pid" 5)" = "$pid" ] && target=-$pid
    kill -TERM -- "$target" 2>/dev/null || true
    if ! wait_until "$timeout_s" "$name to stop" _pid_gone "$pid"; then
        warn "$name did not stop in ${timeout_s}s: SIGKILL"
        kill -KILL -- "$target" 2>/dev/null || true
        wait_until 5 "$name to die" _pid_gone "$pid" || true
    fi
    rm -f "$pidfile"
}

# _proc_stat_field PID N: field N of /proc/PID/stat (3 = state, 5 = process group);
# read directly because a minimal Debian has no ps. Fields count after "(comm)".
_proc_stat_field() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    local fields
    read -r -a fields <<<"$stat"
    echo "${fields[$2 - 3]}"
}

# A zombie counts as gone: what reaps orphans (PID 1) may take its time.
_pid_gone() {
    kill -0 "$1" 2>/dev/null || return 0
    [ "$(_proc_stat_field "$1" 3)" = Z ]
}

# ---------------------------------------------------------------- RabbitMQ
# System mode uses Debian's node (rabbit@host, /var/lib/rabbitmq) through its root
# wrapper scripts. User mode runs a private node (mlstack-dev@localhost) from the
# same installation with data, logs and Erlang cookie under .dev/rabbitmq.
_rabbitmq_mode() {
    local mode=${MLSTACK_RABBITMQ_MODE:-}
    if [ -z "$mode" ]; then
        if is_root; then mode=system; else mode=user; fi
    fi
    echo "$mode"
}

# _rabbitmq MODE TOOL ARGS...: runs rabbitmq-server/rabbitmqctl/rabbitmq-diagnostics.
_rabbitmq() {
    local mode=$1 tool=$2
    shift 2
    if [ "$mode" = system ]; then
        "$tool" "$@"
        return
    fi
    local base="$DEV_DIR/rabbitmq" libexec
    libexec=$(dirname "$(readlink -f "$(command -v rabbitmq-server)")")
    [ -x "$libexec/$tool" ] || libexec=/usr/lib/rabbitmq/bin
    mkdir -p "$base/mnesia" "$base/log"
    if [ ! -s "$base/.erlang.cookie" ]; then
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$base/.erlang.cookie")
    fi
    # Plain default config files would be read from /etc/rabbitmq: point them here.
    HOME="$base" \
        RABBITMQ_NODENAME=mlstack-dev@localhost \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$AMQP_PORT" \
        RABBITMQ_MNESIA_BASE="$base/mnesia" \
        RABBITMQ_LOG_BASE="$base/log" \
        RABBITMQ_PID_FILE="$base/rabbitmq.pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf" \
        "$libexec/$tool" "$@"
}

_rabbitmq_pinged() { _rabbitmq "$1" rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

# rabbitmq_start_if_needed STATEFILE: uses a broker already on 5672; otherwise starts
# one and writes its mode to STATEFILE (the proof that *we* started it).
rabbitmq_start_if_needed() {
    local statefile=$1 mode
    if port_open "$AMQP_HOST" "$AMQP_PORT"; then
        log "RabbitMQ: using the broker already listening on $AMQP_PORT"
        return 0
    fi
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    # Debian's package may have started it during the install.
    if port_open "$AMQP_HOST" "$AMQP_PORT"; then
        log "RabbitMQ: using the broker already listening on $AMQP_PORT"
        return 0
    fi
    mode=$(_rabbitmq_mode)
    log "RabbitMQ: starting ($mode mode)"
    mkdir -p "$(dirname "$statefile")"
    echo "$mode" >"$statefile"
    _rabbitmq "$mode" rabbitmq-server -detached >&2
    if ! wait_until 90 "RabbitMQ to answer ping" _rabbitmq_pinged "$mode" ||
        ! wait_for_port "$AMQP_HOST" "$AMQP_PORT" 60; then
        if [ "$mode" = system ]; then show_log_tail /var/log/rabbitmq/startup_err; fi
        die "RabbitMQ did not start"
    fi
    log "RabbitMQ: up"
}

# rabbitmq_stop_if_started STATEFILE: stops the broker only if STATEFILE says we
# started it.
rabbitmq_stop_if_started() {
    local statefile=$1 mode
    [ -f "$statefile" ] || return 0
    mode=$(cat "$statefile")
    log "RabbitMQ: stopping the broker we started ($mode mode)"
    # `rabbitmqctl stop` may exit 1 although the node halted (the VM can go before it
    # answers, seen after start_app/stop_app cycles): judge by the port instead.
    _rabbitmq "$mode" rabbitmqctl -q stop >&2 || true
    wait_until 30 "RabbitMQ to stop" _port_closed "$AMQP_HOST" "$AMQP_PORT" ||
        warn "RabbitMQ still listens on $AMQP_PORT after rabbitmqctl stop"
    rm -f "$statefile"
}
