# Sourced by the service scripts (container.sh, local_slurm.sh, tracking_server.sh): one way to print usage,
# progress and errors: `. messages.sh NAME USAGE` (NAME prefixes the log lines; USAGE follows $0 in the usage line).
script_name=$1
usage_text=$2
usage() {
  echo "usage: $0 $usage_text" >&2
  exit 2
}
log() { echo "[$script_name] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}
