#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the tests of `memaware sweep --executor slurm` (tests/test_slurm.py
# calls `scripts/slurm_cluster.sh up`) and for trying a sweep on a cluster by hand.
#
#   scripts/slurm_cluster.sh up      install Debian's slurm-wlm + munge if missing (apt-get, needs root), write a
#                                    one-node slurm.conf sized from this machine (`slurmd -C`), start munged,
#                                    slurmctld and slurmd, and wait until `sinfo` shows the node idle. Idempotent:
#                                    a cluster that already answers is left as it is.
#   scripts/slurm_cluster.sh down    stop the daemons this script started (slurmd, slurmctld, munged).
#
# No cgroups are needed (proctrack/linuxproc, task/none), so it also runs inside a container. Exits non-zero with one
# line saying what failed (the daemons' logs are in /var/log/slurm/).
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
PARTITION=${MEMAWARE_SLURM_PARTITION:-debug}

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

answers() { timeout 5 sinfo -h -o %T >/dev/null 2>&1; }

node_ready() { timeout 5 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

install() {
  command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 \
    && return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and we are not root (apt-get install slurm-wlm munge)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } >/dev/null 2>&1 \
    || die "apt-get install slurm-wlm munge failed (is the Debian mirror reachable?)"
}

start_munge() {
  if timeout 5 munge -n </dev/null >/dev/null 2>&1; then return 0; fi
  [ -s /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || create-munge-key -f >/dev/null 2>&1; }
  chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do timeout 5 munge -n </dev/null >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "munged started but munge -n fails"
}

write_conf() {
  local host node
  host=$(hostname -s)
  # "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24152": the
  # machine as slurmd sees it, so that requests are judged against the real node.
  node=$(slurmd -C | head -n 1)
  [[ $node == NodeName=* ]] || die "slurmd -C did not describe this machine: $node"
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
  cat >"$CONF_DIR/slurm.conf" <<EOF
# written by memaware's scripts/slurm_cluster.sh: one node, no cgroups, no accounting database
ClusterName=memaware
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
  if node_ready; then echo "slurm_cluster.sh: a cluster already answers: $(sinfo -h -o '%P %D %c CPUs %m MB %T' | head -n 1)"; return 0; fi
  local t0=$SECONDS
  install
  start_munge
  if ! answers; then
    write_conf
    pgrep -x slurmctld >/dev/null || slurmctld || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
  fi
  pgrep -x slurmd >/dev/null || slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
  for _ in $(seq 120); do
    if node_ready; then
      echo "slurm_cluster.sh: up in $((SECONDS - t0)) s: $(sinfo -h -o '%P %D node, %c CPUs, %m MB, %T' | head -n 1)"
      return 0
    fi
    # a node left down/drained by an earlier run of the daemons comes back here
    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
    sleep 0.5
  done
  die "the node did not become idle within 60 s: $(sinfo -h -o '%N %T %E' 2>&1 | head -n 1)"
}

down() {
  local pidfile
  for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: scripts/slurm_cluster.sh up|down" ;;
esac
