#!/usr/bin/env bash
# slurm-node.sh - a real single-node SLURM on 127.0.0.1 for this project's tests.
#
# Usage: scripts/slurm-node.sh start|stop|status
#
#   start   install munge/slurmctld/slurmd/slurm-client when missing, write
#           /etc/slurm/slurm.conf (and cgroup.conf), start munged, slurmctld and
#           slurmd unless they already run, and wait until the node is idle.
#           Safe to run again: nothing is restarted unless the config changed.
#   stop    stop the three daemons by the PIDs in their PID files.
#   status  say which daemons run and show sinfo; exits 3 when one is down.
#
# Environment:
#   SLURM_NODE_CGROUP=auto|1|0   auto (default): cgroup v1 containment when the v1
#                                hierarchies are writable, else proctrack/linuxproc
#                                with OverMemoryKill; 1 or 0 force the choice.
#   SLURM_NODE_WAIT=30           seconds to wait for each daemon to answer.
#
# For Debian 12 (SLURM 22.05) run as root without systemd: the daemons are started
# by hand and bound to 127.0.0.1. Partitions: `debug` (default) and `short`.
set -euo pipefail

readonly ACTION="${1:-}"
NODE="$(hostname -s)"
readonly NODE
readonly CGROUP_CHOICE="${SLURM_NODE_CGROUP:-auto}"
readonly WAIT_SECONDS="${SLURM_NODE_WAIT:-30}"

readonly CONF_DIR=/etc/slurm
readonly SLURM_CONF="$CONF_DIR/slurm.conf"
readonly CGROUP_CONF="$CONF_DIR/cgroup.conf"
readonly LOG_DIR=/var/log/slurm
readonly STATE_DIR=/var/lib/slurm/slurmctld
readonly SPOOL_DIR=/var/lib/slurm/slurmd
readonly MUNGE_PIDFILE=/run/munge/munged.pid
readonly CTLD_PIDFILE=/run/slurmctld.pid
readonly SLURMD_PIDFILE=/run/slurmd.pid
# hash of the config the running daemons read: they read it only at start
readonly CONF_STAMP=/run/slurm-node.conf.sha256
readonly MARK="written by scripts/slurm-node.sh"

say() { printf 'slurm-node: %s\n' "$*" >&2; }

die() { # die MESSAGE [LOGFILE...]: explain, show the logs' tails, exit 1
  local message="$1" logfile
  shift
  say "ERROR: $message"
  for logfile in "$@"; do
    if [ -s "$logfile" ]; then
      say "last lines of $logfile:"
      tail -n 25 "$logfile" >&2
    fi
  done
  exit 1
}

pid_alive() { # pid_alive PIDFILE COMM: the file names a live process called COMM
  local pid
  [ -s "$1" ] || return 1
  pid="$(cat "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  # PIDs wrap quickly here: a stale file may name an unrelated process
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

wait_until() { # wait_until SECONDS COMMAND...: retry COMMAND every 0.25 s
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.25
  done
}

install_packages() {
  local package missing=()
  for package in munge slurmctld slurmd slurm-client; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null |
      grep -q 'install ok installed' || missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0

  say "installing ${missing[*]}"
  apt-get update -qq || die "apt-get update failed: is the Debian mirror reachable?"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating the munge key"
    mungekey --create --keyfile=/etc/munge/munge.key --force
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0600 /etc/munge/munge.key

  if ! pid_alive "$MUNGE_PIDFILE" munged; then
    rm -f "$MUNGE_PIDFILE" /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged ||
      die "munged did not start" /var/log/munge/munged.log
  fi
  wait_until "$WAIT_SECONDS" bash -c 'munge -n | unmunge' ||
    die "munge does not answer (munge -n | unmunge)" /var/log/munge/munged.log
}

cgroup_v1_writable() {
  local controller probe="/sys/fs/cgroup/freezer/slurm-node-probe.$$"
  [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] || return 1
  for controller in memory cpuset freezer; do
    [ "$(stat -fc %T "/sys/fs/cgroup/$controller" 2>/dev/null)" = cgroupfs ] ||
      return 1
  done
  mkdir "$probe" 2>/dev/null || return 1
  rmdir "$probe"
}

use_cgroup() { # decide once: 0 = yes (cgroup v1), 1 = no (linuxproc)
  case "$CGROUP_CHOICE" in
    1) return 0 ;;
    0) return 1 ;;
    auto) cgroup_v1_writable ;;
    *) die "SLURM_NODE_CGROUP is '$CGROUP_CHOICE'; expected auto, 1 or 0" ;;
  esac
}

hardware_field() { # hardware_field NAME: a field of `slurmd -C`'s node line
  sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$HARDWARE"
}

tracking_lines() { # the process tracking and containment part of slurm.conf
  if [ "$1" = cgroup ]; then
    cat <<EOF
# cgroup v1: jobs are contained; going over --mem ends as OUT_OF_MEMORY
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
EOF
  else
    cat <<EOF
# no usable cgroup v1: processes tracked through /proc; memory sampled every
# 2 s and a job over its --mem is killed (it ends as FAILED)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
EOF
  fi
}

slurm_conf() { # slurm_conf cgroup|linuxproc: the whole slurm.conf on stdout
  local memory
  # report 10% less memory than detected, so the node is never drained as
  # "Low RealMemory" when the kernel's figure moves a little
  memory=$(($(hardware_field RealMemory) * 9 / 10))
  cat <<EOF
# single-node SLURM on 127.0.0.1, $MARK
ClusterName=localcluster
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
$(tracking_lines "$1")
AccountingStorageType=accounting_storage/none
# job completion records, so that 'sacct -c' works without slurmdbd
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job that gives no --mem takes all the node's memory
DefMemPerCPU=512
# refuse at submission what no partition could run, instead of pending forever
EnforcePartLimits=ALL
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PIDFILE
SlurmdPidFile=$SLURMD_PIDFILE
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# listen on the configured address (127.0.0.1), not on 0.0.0.0
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
# finished jobs stay visible to squeue and scontrol for 5 minutes
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$(hardware_field CPUs) \
Boards=$(hardware_field Boards) SocketsPerBoard=$(hardware_field SocketsPerBoard) \
CoresPerSocket=$(hardware_field CoresPerSocket) \
ThreadsPerCore=$(hardware_field ThreadsPerCore) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=ALL Default=NO MaxTime=01:00:00 State=UP
EOF
}

cgroup_conf() {
  cat <<EOF
# $MARK
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainDevices=no
EOF
}

write_if_changed() { # write_if_changed FILE: stdin becomes FILE when it differs
  local tmp
  tmp="$(mktemp)"
  cat >"$tmp"
  if ! cmp -s "$tmp" "$1"; then
    say "writing $1"
    install -m 0644 "$tmp" "$1"
  fi
  rm -f "$tmp"
}

write_config() { # write_config cgroup|linuxproc
  install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
  HARDWARE="$(slurmd -C | head -n 1)" || die "slurmd -C could not describe this node"
  slurm_conf "$1" | write_if_changed "$SLURM_CONF"
  if [ "$1" = cgroup ]; then
    cgroup_conf | write_if_changed "$CGROUP_CONF"
  elif grep -qs "$MARK" "$CGROUP_CONF"; then
    rm -f "$CGROUP_CONF"
  fi
}

config_hash() { # cgroup.conf is absent in the linuxproc variant
  { cat "$SLURM_CONF" "$CGROUP_CONF" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1
}

stop_daemon() { # stop_daemon NAME PIDFILE: SIGTERM, then SIGKILL after 10 s
  local pid
  if pid_alive "$2" "$1"; then
    pid="$(cat "$2")"
    say "stopping $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    wait_until 10 bash -c "! kill -0 $pid" || {
      say "$1 (pid $pid) ignored SIGTERM for 10 s: sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    }
  fi
  rm -f "$2"
}

node_state() {
  sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1
}

node_usable() {
  case "$(node_state)" in
    idle | mixed | allocated | completing) return 0 ;;
  esac
  return 1
}

restart_if_config_changed() {
  local running_hash
  running_hash="$(cat "$CONF_STAMP" 2>/dev/null || true)"
  if [ "$running_hash" != "$(config_hash)" ]; then
    if pid_alive "$CTLD_PIDFILE" slurmctld || pid_alive "$SLURMD_PIDFILE" slurmd; then
      say "the config changed since the daemons started: restarting them"
      stop_daemon slurmd "$SLURMD_PIDFILE"
      stop_daemon slurmctld "$CTLD_PIDFILE"
    fi
  fi
}

start_slurmctld() {
  if ! pid_alive "$CTLD_PIDFILE" slurmctld; then
    say "starting slurmctld"
    config_hash >"$CONF_STAMP"
    /usr/sbin/slurmctld -i || die "slurmctld did not start" "$LOG_DIR/slurmctld.log"
  fi
  wait_until "$WAIT_SECONDS" scontrol ping ||
    die "slurmctld does not answer 'scontrol ping' after ${WAIT_SECONDS} s" \
      "$LOG_DIR/slurmctld.log"
}

start_slurmd() { # returns 1 when the node does not become usable
  if ! pid_alive "$SLURMD_PIDFILE" slurmd; then
    say "starting slurmd"
    /usr/sbin/slurmd -N "$NODE" || return 1
  fi
  wait_until "$WAIT_SECONDS" node_usable && return 0

  # a node left DOWN or DRAINED by an earlier unclean stop comes back on RESUME
  say "node $NODE is '$(node_state)': resuming it"
  scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
  wait_until "$WAIT_SECONDS" node_usable
}

do_start() {
  local started=$SECONDS tracking=linuxproc
  [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"
  install_packages
  start_munge
  use_cgroup && tracking=cgroup
  write_config "$tracking"
  restart_if_config_changed
  start_slurmctld

  if ! start_slurmd; then
    if [ "$tracking" != cgroup ] || [ "$CGROUP_CHOICE" != auto ]; then
      die "node $NODE is not usable (state '$(node_state)')" "$LOG_DIR/slurmd.log"
    fi
    # cgroup v1 looked usable but slurmd could not use it: fall back once
    say "node not usable with cgroups; falling back to proctrack/linuxproc"
    tail -n 5 "$LOG_DIR/slurmd.log" >&2 || true
    write_config linuxproc
    restart_if_config_changed
    start_slurmctld
    start_slurmd ||
      die "node $NODE is not usable (state '$(node_state)')" "$LOG_DIR/slurmd.log"
  fi
  say "ready in $((SECONDS - started)) s ($tracking):" \
    "$(sinfo -h -o '%P=%T' | tr '\n' ' ')"
}

do_stop() {
  stop_daemon slurmd "$SLURMD_PIDFILE"
  stop_daemon slurmctld "$CTLD_PIDFILE"
  stop_daemon munged "$MUNGE_PIDFILE"
  rm -f "$CONF_STAMP"
}

do_status() {
  local entry name pidfile down=0
  for entry in "munged:$MUNGE_PIDFILE" "slurmctld:$CTLD_PIDFILE" \
    "slurmd:$SLURMD_PIDFILE"; do
    name="${entry%%:*}"
    pidfile="${entry#*:}"
    if pid_alive "$pidfile" "$name"; then
      echo "$name: running (pid $(cat "$pidfile"))"
    else
      echo "$name: stopped"
      down=1
    fi
  done
  if [ "$down" -eq 0 ]; then
    sinfo || down=1
  fi
  return "$((down * 3))"
}

case "$ACTION" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *)
    echo "usage: $0 start|stop|status (got '${ACTION}')" >&2
    exit 2
    ;;
esac
