#!/usr/bin/env bash
# A real Slurm cluster of one node (or several, all on this host) in a directory, for tests, CI and trying the
# launcher on a laptop.
#
#   scripts/local_slurm.sh start DIR   install slurm-wlm + munge if missing, write DIR/slurm.conf, start munged,
#                                      slurmctld and slurmd (pid files in DIR), wait until every node is idle,
#                                      write DIR/env.sh (source it: exports SLURM_CONF and the munge socket)
#   scripts/local_slurm.sh stop DIR    stop exactly the daemons `start` started, by their pid files
#   scripts/local_slurm.sh status DIR  sinfo + squeue against DIR's cluster
#
# Needs root (the daemons run as root here: SlurmUser=SlurmdUser=root) and Debian/Ubuntu apt for the install.
# No accounting daemon (slurmdbd): `sacct` is unavailable, so anything that polls job states must bound its waits.
# Environment: LOCAL_SLURM_PARTITION (default "local"), LOCAL_SLURM_START_TIMEOUT (seconds, default 60),
# LOCAL_SLURM_NODES (default 1). With N > 1 nodes, node1..nodeN are N slurmd daemons on this host, each with its
# own node name (slurmd -N), port, spool, pid and log file (Slurm's "multiple slurmd" mode: Debian's build has
# it); the host's CPUs and memory are split between them. Their names do not resolve: jobs that need the first
# node's address (torch.distributed's MASTER_ADDR) use 127.0.0.1, as hydra/launcher=slurm_local does.
set -euo pipefail

# shellcheck source=scripts/messages.sh
. "$(dirname "$0")/messages.sh" local_slurm "{start|stop|status} DIR"

[ $# -eq 2 ] || usage
action=$1
dir=$2
partition=${LOCAL_SLURM_PARTITION:-local}
start_timeout=${LOCAL_SLURM_START_TIMEOUT:-60}
nodes=${LOCAL_SLURM_NODES:-1}


install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" -eq 0 ] || die "slurm-wlm/munge are not installed and installing them needs root: run as root or 'apt-get install slurm-wlm munge'"
  command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and apt-get is unavailable: install Slurm and MUNGE by hand"
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # another installer (a test fixture, a user) may hold dpkg's lock: wait for it rather than fail
  apt-get -o DPkg::Lock::Timeout=600 update -qq </dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurm-wlm munge </dev/null >/dev/null
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

# The daemons' pid files in stop order, the reverse of the start order (an unmatched glob names no file).
pid_files() { echo "$dir"/slurmd*.pid "$dir/slurmctld.pid" "$dir/munged.pid"; }

# The node names: the host's own for a one-node cluster, node1..nodeN otherwise.
node_names() {
  if [ "$nodes" -eq 1 ]; then
    hostname -s
  else
    seq -f 'node%g' 1 "$nodes"
  fi
}

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
  local host cpus mem_mb ctld_port slurmd_port used node port node_lines="" spool="$dir/spool" slurmd_files=slurmd
  host=$(hostname -s)
  # Each node gets its share of the host (at least one CPU); a one-node cluster gets all of it.
  cpus=$(($(nproc) / nodes))
  [ "$cpus" -ge 1 ] || cpus=1
  # Leave 5% of RAM to the OS so the node is never drained for "low RealMemory".
  mem_mb=$(awk -v n="$nodes" '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.95 / n}' /proc/meminfo)
  ctld_port=$(free_port)
  used=" $ctld_port "
  if [ "$nodes" -eq 1 ]; then
    slurmd_port=$(free_port)
    while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
    node_lines="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
  else
    # One slurmd per node on this host: its own port, and %n (the node name) in its spool, pid and log paths.
    slurmd_port=""
    spool="$dir/spool/%n"
    slurmd_files="slurmd-%n"
    for node in $(node_names); do
      port=$(free_port)
      while [[ "$used" == *" $port "* ]]; do port=$(free_port); done
      used+="$port "
      node_lines+="NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 Port=$port CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"$'\n'
    done
  fi
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/tmp"
  cat >"$dir/slurm.conf.tmp" <<EOF
# Written by scripts/local_slurm.sh: a cluster of $nodes node(s) on this host, living in $dir.
ClusterName=localslurm
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
${slurmd_port:+SlurmdPort=$slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/$slurmd_files.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/$slurmd_files.log
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
$node_lines
PartitionName=$partition Nodes=$(node_names | paste -sd,) Default=YES DefaultTime=00:30:00 MaxTime=04:00:00 State=UP
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

wait_for_idle_nodes() {
  local deadline=$((SECONDS + start_timeout)) states="" ready node state log_file
  while [ $SECONDS -lt $deadline ]; do
    states=$(sinfo --noheader --Node --partition "$partition" --format='%N %t' 2>/dev/null || true)
    ready=0
    while read -r node state; do
      case "$state" in
        idle | mix | alloc) ready=$((ready + 1)) ;;
        # A restarted cluster remembers a node as down; bring it back.
        drain* | down*) scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
      esac
    done <<<"$states"
    [ "$ready" -eq "$nodes" ] && return 0
    sleep 1
  done
  for log_file in "$dir"/log/slurm*.log; do
    log "$(basename "$log_file") tail:"
    tail -n 20 "$log_file" >&2 || true
  done
  die "not all $nodes node(s) became idle within ${start_timeout}s (states: '${states:-none}'); logs are in $dir/log"
}

start() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for pid_file in $(pid_files); do
    pid_alive "$pid_file" && die "$(basename "$pid_file" .pid) is already running for $dir (pid $(cat "$pid_file")): run '$0 stop $dir' first"
  done
  [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_NODES must be a positive number, got '$nodes'"
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
  if [ "$nodes" -eq 1 ]; then
    slurmd -f "$dir/slurm.conf" </dev/null
  else
    for node in $(node_names); do
      mkdir -p "$dir/spool/$node"
      slurmd -f "$dir/slurm.conf" -N "$node" </dev/null
    done
  fi
  wait_for_idle_nodes
  log "cluster up: partition '$partition', $nodes node(s) ($(node_names | paste -sd,)) on $(hostname -s) ($(nproc) CPUs); source $dir/env.sh"
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
  local pid_file pid waited
  cancel_jobs
  for pid_file in $(pid_files); do
    [ -f "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      waited=0
      while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do
        sleep 0.1
        waited=$((waited + 1))
      done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
      log "stopped $(basename "$pid_file" .pid) (pid $pid)"
    fi
    rm -f "$pid_file"
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
    # (2>/dev/null first: a process may end between the glob and the read)
    tr '\0' '\n' 2>/dev/null <"$environ" | grep -qxF "$conf" || continue
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ] || tr '\0' '\n' 2>/dev/null <"$environ" | grep -q '^SLURM_JOB_ID='; then
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
  sinfo --Node
  squeue
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
