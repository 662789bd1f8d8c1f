#!/usr/bin/env bash
# A single-node Slurm cluster with accounting and 2 fake GPUs, for the sweep tests (tests/test_sweep_slurm.py).
#
#   bash tests/slurm/cluster.sh start    # install (apt, once) + configure + start munge, mariadb, slurmdbd, slurmctld, slurmd
#   bash tests/slurm/cluster.sh status   # which daemons run; sinfo; exit 0 only when the node takes jobs
#   bash tests/slurm/cluster.sh stop     # cancel every job, then stop each daemon by its pid file
#
# Needs root (Debian 12: slurm-wlm 22.05). Environment knobs:
#   LLS_SLURM_GPUS=2            fake GPUs (gres) on the node
#   LLS_SLURM_CRED_EXPIRE=10    seconds a requeued job waits before it may start again (Slurm default: 120)
#   LLS_SLURM_NO_INSTALL=1      never call apt-get (fail if a package is missing)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ETC=/etc/slurm
RUN=/run/lls-slurm
LOG=/var/log/lls-slurm
STATE=/var/lib/lls-slurm
DEV=/dev
NGPU="${LLS_SLURM_GPUS:-2}"
CRED_EXPIRE="${LLS_SLURM_CRED_EXPIRE:-10}"
DBPASS=lls-slurm-test
PKGS=(slurm-wlm slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
HOST="$(hostname -s)"
# daemon name -> pid file (stop order: compute node first, database last)
DAEMONS=(slurmd slurmctld slurmdbd mariadb munged)
declare -A PIDFILE=(
  [slurmd]="$RUN/slurmd.pid" [slurmctld]="$RUN/slurmctld.pid" [slurmdbd]="$RUN/slurmdbd.pid"
  [mariadb]="/run/mysqld/lls-mariadb.pid" [munged]="/run/munge/munged.pid"
)

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

pid_of() {  # the live pid recorded in daemon $1's pid file, or nothing
  local f="${PIDFILE[$1]}" pid
  [[ -s "$f" ]] || return 1
  pid="$(tr -dc 0-9 <"$f")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s
  local t="$1" what="$2"; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || { say "timed out after ${t}s waiting for $what"; return 1; }
    sleep 0.5
  done
}

install_packages() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ -n "${LLS_SLURM_NO_INSTALL:-}" ]] && die "missing packages: ${missing[*]}"
  say "installing ${missing[*]}"
  # Keep the packages' init scripts from starting daemons: this script starts them itself.
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
  [[ -n $made_policy ]] && rm -f $policy
  return 0
}

render() {  # render TEMPLATE DEST MODE
  local cpus sockets cores threads mem
  read -r cpus sockets cores threads mem < <(slurmd -C | head -1 | tr ' ' '\n' | awk -F= '
    /^CPUs=/{c=$2} /^SocketsPerBoard=/{s=$2} /^CoresPerSocket=/{k=$2} /^ThreadsPerCore=/{t=$2} /^RealMemory=/{m=$2}
    END{print c, s, k, t, m}')
  # leave 10 % of the memory to the daemons and the test runner
  mem=$((mem * 9 / 10))
  sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$cpus|g" -e "s|@SOCKETS@|$sockets|g" -e "s|@CORES@|$cores|g" \
      -e "s|@THREADS@|$threads|g" -e "s|@MEM@|$mem|g" -e "s|@NGPU@|$NGPU|g" -e "s|@LASTGPU@|$((NGPU - 1))|g" \
      -e "s|@DEF_MEM_PER_CPU@|$((mem / cpus / 2))|g" -e "s|@CRED_EXPIRE@|$CRED_EXPIRE|g" \
      -e "s|@STATE@|$STATE|g" -e "s|@RUN@|$RUN|g" -e "s|@LOG@|$LOG|g" -e "s|@DEV@|$DEV|g" \
      -e "s|@DBPASS@|$DBPASS|g" "$HERE/$1" >"$2"
  chmod "$3" "$2"
}

configure() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/slurmctld" "$STATE/slurmd"
  render slurm.conf.in "$ETC/slurm.conf" 644
  render gres.conf.in "$ETC/gres.conf" 644
  render slurmdbd.conf.in "$ETC/slurmdbd.conf" 600
  # Fake GPU device files (character devices with /dev/null's numbers: harmless if anything opens them).
  for ((i = 0; i < NGPU; i++)); do
    [[ -c "$DEV/lls-fakegpu$i" ]] || mknod -m 666 "$DEV/lls-fakegpu$i" c 1 3
  done
}

start_munge() {
  pid_of munged >/dev/null && return 0
  [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --pid-file="${PIDFILE[munged]}"
  wait_for 10 munge munge -n
}

start_mariadb() {
  if ! pid_of mariadb >/dev/null; then
    mkdir -p /run/mysqld "$LOG/mariadb" && chown mysql:mysql /run/mysqld "$LOG/mariadb"
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    # mariadbd does not daemonize: run it in the background, detached from this shell, logging to $LOG.
    setsid /usr/sbin/mariadbd --user=mysql --pid-file="${PIDFILE[mariadb]}" --socket=/run/mysqld/mysqld.sock \
      --bind-address=127.0.0.1 --log-error="$LOG/mariadb/error.log" </dev/null >>"$LOG/mariadb/console.log" 2>&1 &
    wait_for 60 mariadb mariadb-admin --socket=/run/mysqld/mysqld.sock ping
    wait_for 10 "mariadb pid file" test -s "${PIDFILE[mariadb]}"
  fi
  mariadb --socket=/run/mysqld/mysqld.sock -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

node_ready() { sinfo -h -n "$HOST" -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)'; }

cmd_start() {
  [[ $EUID -eq 0 ]] || die "run as root"
  install_packages
  configure
  start_munge
  start_mariadb
  if ! pid_of slurmdbd >/dev/null; then slurmdbd; fi
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -n list cluster format=cluster | grep -qw lls || sacctmgr -i add cluster lls >/dev/null
  if ! pid_of slurmctld >/dev/null; then slurmctld; fi
  wait_for 30 slurmctld scontrol ping
  if ! pid_of slurmd >/dev/null; then slurmd; fi
  if ! wait_for 30 "node $HOST" node_ready; then
    scontrol update nodename="$HOST" state=resume || true
    wait_for 15 "node $HOST" node_ready || { tail -20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2; die "node not up"; }
  fi
  say "up: node $HOST, $NGPU fake GPUs, accounting via slurmdbd (logs in $LOG)"
}

stop_daemon() {
  local name="$1" pid
  pid="$(pid_of "$name")" || { rm -f "${PIDFILE[$name]}"; return 0; }
  kill -TERM "$pid"
  local end=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= end)); then say "$name ($pid) ignored SIGTERM for 30 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.3
  done
  rm -f "${PIDFILE[$name]}"
  say "stopped $name ($pid)"
}

cmd_stop() {
  [[ $EUID -eq 0 ]] || die "run as root"
  if pid_of slurmctld >/dev/null; then
    local jobs
    jobs="$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
    if [[ -n "${jobs// /}" ]]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs || true
      wait_for 30 "jobs to end" test -z "$(squeue -h -o %A 2>/dev/null)" || true
    fi
  fi
  for d in "${DAEMONS[@]}"; do stop_daemon "$d"; done
}

cmd_status() {
  local ok=0 pid
  for d in "${DAEMONS[@]}"; do
    if pid="$(pid_of "$d")"; then echo "$d: running (pid $pid)"; else echo "$d: stopped"; ok=1; fi
  done
  if ((ok == 0)); then sinfo -N -o "%N %T %c %m %G" || ok=1; node_ready || ok=1; fi
  return $ok
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
