#!/usr/bin/env bash
# Stop the one-node SLURM cluster that start.sh started: cancel all jobs, stop slurmd, slurmctld and
# (unless --keep-munge) munged, each by the pid it wrote. Configs and packages stay; pass --purge to
# remove the configs and the controller's saved state as well (start.sh then rebuilds from nothing).
set -uo pipefail

keep_munge=0
purge=0
for arg in "$@"; do
    case "$arg" in
        --keep-munge) keep_munge=1 ;;
        --purge) purge=1 ;;
        *) echo "usage: stop.sh [--keep-munge] [--purge]" >&2; exit 2 ;;
    esac
done

say() { echo "local-slurm: $*"; }

stop_pidfile() {  # name pidfile
    local pid
    [ -s "$2" ] || return 0
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $1 (pid $pid)"
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$2"
}

if command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
    scancel --full --quiet --signal=KILL $(squeue -h -o %i 2>/dev/null) 2>/dev/null || true
fi
stop_pidfile slurmd /run/slurm/slurmd.pid
stop_pidfile slurmctld /run/slurm/slurmctld.pid
if [ "$keep_munge" -eq 0 ]; then
    stop_pidfile munged /run/munge/munged.pid
fi
if [ "$purge" -eq 1 ]; then
    say "removing configs and saved state"
    rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
fi
exit 0
