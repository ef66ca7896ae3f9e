#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (slurmctld + slurmd + munged, as
# root), for trying `sweep/table.py submit` and for the test suite. Everything
# it writes - configuration, munge key, state, logs - stays in one folder; it
# touches no system-wide Slurm or munge set-up and runs beside them.
#
#   sudo bash sweep/local_slurm.sh start [DIR]   # prints the line to export
#   export SLURM_CONF=DIR/slurm.conf              # then sbatch, squeue, sinfo ...
#   sudo bash sweep/local_slurm.sh stop [DIR]
#
# DIR defaults to /tmp/local-slurm. Needs Debian's slurm-wlm and munge
# packages (apt-get install slurm-wlm munge; Slurm 22.05 in Debian 12) and
# root (slurmd starts jobs as their users). The node is this machine with all
# its CPUs (LOCAL_SLURM_CPUS to choose fewer); ports 6817/6818 or the next
# free pair. Exit status: 0 when the node is up, 1 with the reason otherwise.
set -euo pipefail

action=${1:-}
dir=${2:-${LOCAL_SLURM_DIR:-/tmp/local-slurm}}
case "$action" in start|stop|status) ;; *)
  echo "usage: $0 start|stop|status [DIR]" >&2; exit 2;; esac
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf

fail() { echo "local_slurm: $*" >&2; exit 1; }

# The pid in FILE if that process still runs (and is the program NAME).
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] \
    && echo "$pid"
}

stop_daemon() {   # FILE NAME: TERM, then KILL after 10 s
  local pid i
  pid=$(running "$1" "$2") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    running "$1" "$2" >/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

if [ "$action" = stop ]; then
  stop_daemon "$dir/slurmd.pid" slurmd
  stop_daemon "$dir/slurmctld.pid" slurmctld
  stop_daemon "$dir/munged.pid" munged
  echo "local_slurm: stopped (logs and state kept in $dir)"
  exit 0
fi

if [ "$action" = status ]; then
  for name in munged slurmctld slurmd; do
    if pid=$(running "$dir/$name.pid" $name); then echo "$name: running ($pid)"
    else echo "$name: not running"; fi
  done
  exit 0
fi

[ "$(id -u)" = 0 ] || fail "needs root (slurmd starts jobs as their users); try sudo"
for program in munged slurmctld slurmd sbatch scontrol sinfo; do
  command -v "$program" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
  command -v "$program" >/dev/null 2>&1 || \
    fail "$program not found: apt-get install slurm-wlm munge"
done
if running "$dir/slurmctld.pid" slurmctld >/dev/null; then
  echo "local_slurm: already running in $dir"
  echo "export SLURM_CONF=$conf"
  exit 0
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=${LOCAL_SLURM_PORT:-6817}
for _ in $(seq 50); do
  port_free "$port" && port_free $((port + 1)) && break
  port=$((port + 2))
done
port_free "$port" || fail "no free port pair from ${LOCAL_SLURM_PORT:-6817} on"

host=$(hostname -s)
cpus=${LOCAL_SLURM_CPUS:-$(nproc)}
memory=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p "$dir/munge" "$dir/ctld" "$dir/d"
# Readable by everyone (clients read slurm.conf and reach munge's socket); the key
# is root's alone.
chmod 755 "$dir" "$dir/munge"

# A key of its own: jobs of this cluster are authenticated by it alone.
[ -s "$dir/munge/munge.key" ] || \
  (umask 077 && head -c 1024 /dev/urandom > "$dir/munge/munge.key")
chmod 600 "$dir/munge/munge.key"

cat > "$conf" <<CONF
# Written by sweep/local_slurm.sh: one node ($host, $cpus CPUs), root daemons.
ClusterName=localsweep
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# No cgroups: processes are tracked by their parent ids.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is cancelled or requeued.
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" \
  --seed-file="$dir/munge/munged.seed" --force \
  || fail "munged did not start (see $dir/munged.log)"
export SLURM_CONF=$conf
slurmctld -f "$conf" || fail "slurmctld did not start (see $dir/slurmctld.log)"
slurmd -f "$conf" || fail "slurmd did not start (see $dir/slurmd.log)"

for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1)
  case "$state" in idle|mix|alloc) break;; esac
  sleep 0.5
done
case "$state" in idle|mix|alloc) ;; *)
  fail "the node did not come up (state: ${state:-none}; see $dir/*.log)";; esac
echo "local_slurm: node $host ($cpus CPUs) up, ports $port/$((port + 1)), files in $dir"
echo "export SLURM_CONF=$conf"
