#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (localhost), for the tests and for trying
# `vae slurm submit` without a real cluster. Needs root (apt-get, daemons).
#
#   slurm/local-cluster.sh up       install slurm-wlm + munge if missing, start munged, slurmctld and
#                                   slurmd, wait until `sinfo` shows the node idle
#   slurm/local-cluster.sh down     stop the daemons that `up` started (by their PID files)
#   slurm/local-cluster.sh status   print `sinfo`
#
# The config goes to /etc/slurm/slurm.conf (where every SLURM command looks) unless a file not
# written by this script is already there; state and logs go to $VAE_SLURM_DIR (/tmp/vae-slurm).
set -euo pipefail

DIR=${VAE_SLURM_DIR:-/tmp/vae-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by vae-lightning slurm/local-cluster.sh"
MUNGE_PID=/run/munge/munged.pid

say() { echo "local-cluster: $*" >&2; }

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        apt-get install -y -qq slurm-wlm munge >/dev/null
    }
}

foreign_conf() { [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; }

write_conf() {
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<EOF
$MARK
ClusterName=vae-local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
# short-lived credentials: a requeued job starts again within seconds, not ~2 minutes
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# seconds between SIGTERM and SIGKILL when a job is cancelled or requeued
KillWait=5
MpiDefault=none
# a requeued job becomes eligible after cred_expire; backfill every second starts it then
SchedulerParameters=bf_interval=1
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

started() { echo "$1" >>"$DIR/started"; }  # `down` stops only what `up` started

start_munge() {
    alive "$MUNGE_PID" && return
    if [[ ! -f /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
    chmod 400 /etc/munge/munge.key
    chmod 755 /run/munge
    runuser -u munge -- munged --pid-file="$MUNGE_PID"
    started "$MUNGE_PID"
}

up() {
    install
    if foreign_conf; then
        say "$CONF was not written by this script: using that cluster as it is"
        sinfo >/dev/null && return
        say "but sinfo gets no answer from it"; exit 1
    fi
    write_conf
    start_munge
    alive "$DIR/slurmctld.pid" || { slurmctld -c; started "$DIR/slurmctld.pid"; }
    alive "$DIR/slurmd.pid" || { slurmd -N localhost; started "$DIR/slurmd.pid"; }
    for _ in $(seq 60); do
        state=$(sinfo -h -o %T 2>/dev/null || true)
        if [[ $state == idle* || $state == mixed* || $state == allocated* ]]; then
            say "up: node localhost is $state (logs in $DIR)"
            return
        fi
        sleep 0.5
    done
    say "the node did not become idle within 30 s (sinfo: ${state:-no answer}); see $DIR/slurmctld.log and $DIR/slurmd.log"
    exit 1
}

stop() {  # stop the process in PID file $1 and wait for it to exit
    local pidfile=$1 pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    [[ -f $DIR/started ]] || { say "nothing to stop"; return; }
    for pidfile in $(tac "$DIR/started"); do stop "$pidfile"; done  # slurmd, slurmctld, then munged
    rm -f "$DIR/started"
    say "down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) sinfo ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
