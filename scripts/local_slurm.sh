#!/usr/bin/env bash
# A real one-node Slurm cluster in a directory, for tests, CI and trying the launcher on a laptop.
#
#   scripts/local_slurm.sh start DIR   install slurm-wlm + munge if missing, write DIR/slurm.conf, start munged,
#                                      slurmctld and slurmd (pid files in DIR), wait until the node is idle,
#                                      write DIR/env.sh (source it: exports SLURM_CONF and the munge socket)
#   scripts/local_slurm.sh stop DIR    stop exactly the daemons `start` started, by their pid files
#   scripts/local_slurm.sh status DIR  sinfo + squeue against DIR's cluster
#
# Needs root (the daemons run as root here: SlurmUser=SlurmdUser=root) and Debian/Ubuntu apt for the install.
# No accounting daemon (slurmdbd): `sacct` is unavailable, so anything that polls job states must bound its waits.
# Environment: LOCAL_SLURM_PARTITION (default "local"), LOCAL_SLURM_START_TIMEOUT (seconds, default 60).
set -euo pipefail

usage() {
  echo "usage: $0 {start|stop|status} DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$2
partition=${LOCAL_SLURM_PARTITION:-local}
start_timeout=${LOCAL_SLURM_START_TIMEOUT:-60}
daemons=(slurmd slurmctld munged) # stop order: reverse of start order

log() { echo "[local_slurm] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" -eq 0 ] || die "slurm-wlm/munge are not installed and installing them needs root: run as root or 'apt-get install slurm-wlm munge'"
  command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and apt-get is unavailable: install Slurm and MUNGE by hand"
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends slurm-wlm munge </dev/null >/dev/null
}

# A TCP port nothing listens on, so two clusters (or a real Slurm) on the same host never clash.
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    echo $((20000 + RANDOM % 20000))
  fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_munge_key() {
  mkdir -p "$dir/munge"
  chmod 700 "$dir/munge"
  if [ ! -s "$dir/munge/munge.key" ]; then
    # MUNGE wants 32..1024 random bytes, readable by its user only.
    head -c 1024 /dev/urandom >"$dir/munge/munge.key.tmp"
    chmod 400 "$dir/munge/munge.key.tmp"
    mv "$dir/munge/munge.key.tmp" "$dir/munge/munge.key"
  fi
}

write_slurm_conf() {
  local host cpus mem_mb ctld_port slurmd_port
  host=$(hostname -s)
  cpus=$(nproc)
  # Leave 5% of RAM to the OS so the node is never drained for "low RealMemory".
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/tmp"
  cat >"$dir/slurm.conf.tmp" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster living in $dir.
ClusterName=localslurm
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
TmpFS=$dir/tmp
# No cgroups in containers/CI: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# CPUs and memory are consumable, so a 2-job sweep can share the node like on a real cluster.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((mem_mb / cpus))
# Trust this file's CPUs/memory (containers may show more hardware than they may use).
SlurmdParameters=config_overrides
ReturnToService=2
# Batch jobs go back to the queue on requeue or node failure, keeping their job id.
JobRequeue=1
KillWait=15
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$partition Nodes=$host Default=YES DefaultTime=00:30:00 MaxTime=04:00:00 State=UP
EOF
  mv "$dir/slurm.conf.tmp" "$dir/slurm.conf"
}

write_env() {
  cat >"$dir/env.sh.tmp" <<EOF
# Source me to talk to the local cluster in $dir.
export SLURM_CONF=$dir/slurm.conf
export LOCAL_SLURM_DIR=$dir
export LOCAL_SLURM_PARTITION=$partition
EOF
  mv "$dir/env.sh.tmp" "$dir/env.sh"
}

wait_for_idle_node() {
  local deadline=$((SECONDS + start_timeout)) state=""
  while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo --noheader --partition "$partition" --format=%t 2>/dev/null | head -n1 || true)
    case "$state" in
      idle | mix | alloc) return 0 ;;
      drain* | down*)
        # A restarted cluster remembers the node as down; bring it back.
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        ;;
    esac
    sleep 1
  done
  log "slurmctld log tail:"
  tail -n 20 "$dir/log/slurmctld.log" >&2 || true
  log "slurmd log tail:"
  tail -n 20 "$dir/log/slurmd.log" >&2 || true
  die "the node did not become idle within ${start_timeout}s (state: '${state:-none}'); logs are in $dir/log"
}

start() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for d in "${daemons[@]}"; do
    pid_alive "$dir/$d.pid" && die "$d is already running for $dir (pid $(cat "$dir/$d.pid")): run '$0 stop $dir' first"
  done
  [ "$(id -u)" -eq 0 ] || die "start needs root here (SlurmdUser=root runs jobs as any user)"
  install_packages
  write_munge_key
  write_slurm_conf
  write_env
  export SLURM_CONF=$dir/slurm.conf

  # --force: munged refuses root and world-writable ancestors like /tmp otherwise; the key is ours alone.
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed" </dev/null
  slurmctld -f "$dir/slurm.conf" -i </dev/null # -i: ignore state left by an earlier run in DIR
  slurmd -f "$dir/slurm.conf" </dev/null
  wait_for_idle_node
  log "cluster up: partition '$partition' on $(hostname -s) ($(nproc) CPUs); source $dir/env.sh"
}

cancel_jobs() {
  # Jobs die with the cluster: otherwise their slurmstepd processes outlive slurmd.
  [ -f "$dir/slurm.conf" ] && pid_alive "$dir/slurmctld.pid" || return 0
  export SLURM_CONF=$dir/slurm.conf
  local jobs deadline=$((SECONDS + 30))
  jobs=$(squeue --noheader --format=%A 2>/dev/null || true)
  [ -n "$jobs" ] || return 0
  # shellcheck disable=SC2086
  scancel $jobs 2>/dev/null || true
  while [ $SECONDS -lt $deadline ] && [ -n "$(squeue --noheader --format=%A 2>/dev/null || true)" ]; do
    sleep 0.5
  done
}

stop() {
  [ -d "$dir" ] || die "no such directory: $dir"
  local d pid waited
  cancel_jobs
  for d in "${daemons[@]}"; do
    [ -f "$dir/$d.pid" ] || continue
    pid=$(cat "$dir/$d.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      waited=0
      while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do
        sleep 0.1
        waited=$((waited + 1))
      done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
      log "stopped $d (pid $pid)"
    fi
    rm -f "$dir/$d.pid"
  done
  kill_leftover_job_processes
}

# Job steps whose slurmstepd outlived slurmd: this cluster's only (SLURM_CONF names our slurm.conf) and only
# job processes (slurmstepd, or a SLURM_JOB_ID in the environment), never this script's own ancestors.
kill_leftover_job_processes() {
  local conf="SLURM_CONF=$dir/slurm.conf" pid ancestors=" " p=$$ leftovers=()
  while [ "$p" -gt 1 ] 2>/dev/null; do
    ancestors+="$p "
    p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 1)
  done
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    [[ "$ancestors" == *" $pid "* ]] && continue
    tr '\0' '\n' <"$environ" 2>/dev/null | grep -qxF "$conf" || continue
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ] || tr '\0' '\n' <"$environ" | grep -q '^SLURM_JOB_ID='; then
      leftovers+=("$pid")
    fi
  done
  [ ${#leftovers[@]} -gt 0 ] || return 0
  kill -KILL "${leftovers[@]}" 2>/dev/null || true
  log "killed ${#leftovers[@]} leftover job process(es) of this cluster: ${leftovers[*]}"
}

status() {
  # shellcheck disable=SC1091
  source "$dir/env.sh"
  sinfo
  squeue
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
