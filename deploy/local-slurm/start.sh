#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (controller and compute node in one), for the
# SLURM tests and CI. Idempotent: installs Debian's packages if missing, (re)writes the configs,
# starts munged, slurmctld and slurmd if they are not running, and waits until the node is idle.
# Needs root (CI runs as root). Undo with stop.sh.
#
# Environment:
#   SLURM_NODE_GPUS   GPUs the node declares (default: /dev/nvidia[0-9]* found, else 1 placeholder GPU,
#                     so that job scripts with --gres=gpu:1 are accepted and run on a CPU-only machine)
#   SLURM_START_TIMEOUT  seconds to wait for the node to become idle (default 60)
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SLURMD_DIR=/var/spool/slurmd
TIMEOUT=${SLURM_START_TIMEOUT:-60}

say() { echo "local-slurm: $*"; }
die() { echo "local-slurm: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts system daemons)"

# --- 1. packages ------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
    || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

# --- 2. munge: a key, then the daemon as user munge -------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
install -d -o munge -g munge -m 0711 /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    say "generating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n </dev/null | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- 3. slurm.conf: this host is controller and node ------------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MB=$((MEM_MB * 95 / 100))  # a little under the machine's, so slurmd never reports less than declared
if [ -n "${SLURM_NODE_GPUS:-}" ]; then
    GPUS=$SLURM_NODE_GPUS
else
    GPUS=$(find /dev -maxdepth 1 -regex '/dev/nvidia[0-9]+' 2>/dev/null | wc -l)
    [ "$GPUS" -gt 0 ] || GPUS=1
fi

install -d -o slurm -g slurm -m 0755 "$LOG_DIR" "$STATE_DIR" "$SLURMD_DIR" /run/slurm

NEW_CONF=$(mktemp)
cat >"$NEW_CONF" <<EOF
# Written by lamost-classify deploy/local-slurm/start.sh: a one-node test cluster.
ClusterName=lamost-local
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SLURMD_DIR
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=$HOST CPUs=$CPUS RealMemory=$REAL_MB Gres=gpu:$GPUS State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
NEW_GRES=$(mktemp)
if [ -e /dev/nvidia0 ] && [ -z "${SLURM_NODE_GPUS:-}" ]; then
    echo "NodeName=$HOST Name=gpu File=/dev/nvidia[0-$((GPUS - 1))]" >"$NEW_GRES"
else
    # No GPU device files: placeholders, enough for SLURM to schedule and run --gres=gpu:N jobs.
    # (gres/gpu ignores a bare Count=: slurmd then reports 0 GPUs and the node goes INVALID.)
    for _ in $(seq "$GPUS"); do echo "NodeName=$HOST Name=gpu File=/dev/null"; done >"$NEW_GRES"
fi

changed=0
for pair in "$NEW_CONF:$CONF_DIR/slurm.conf" "$NEW_GRES:$CONF_DIR/gres.conf"; do
    new=${pair%%:*}
    dest=${pair#*:}
    if ! cmp -s "$new" "$dest"; then
        install -m 0644 "$new" "$dest"
        changed=1
    fi
    rm -f "$new"
done

# --- 4. daemons -------------------------------------------------------------------------------
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$changed" -eq 1 ] && { running /run/slurm/slurmctld.pid || running /run/slurm/slurmd.pid; }; then
    say "configuration changed: restarting the daemons"
    bash "$(dirname "$0")/stop.sh" --keep-munge
fi
if ! running /run/slurm/slurmctld.pid; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
fi
if ! running /run/slurm/slurmd.pid; then
    say "starting slurmd"
    /usr/sbin/slurmd
fi

# --- 5. wait until the node is idle -----------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
state=""
while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
        idle | mixed | allocated) break ;;
        inval*) break ;;  # slurm.conf disagrees with the hardware: waiting will not help
        down* | drain* | drained*)
            # A restart leaves the node down ("Node unexpectedly rebooted"): bring it back.
            scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
case "$state" in
    idle | mixed | allocated) ;;
    *)
        tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
        die "node $HOST not idle after ${TIMEOUT}s (state: '${state:-no answer}')" ;;
esac
sinfo
say "ready: node $HOST, $CPUS CPUs, ${REAL_MB} MB, gpu:$GPUS, partition 'local'"
