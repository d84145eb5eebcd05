#!/usr/bin/env bash
# Bring up a one-node SLURM cluster with accounting on this machine, for tests/test_slurm.py.
#
# Debian's packages (SLURM 22.05, munge, MariaDB); no systemd, so every daemon is started by hand:
#   munged → mariadbd → slurmdbd → (cluster, account, user in the accounting database) → slurmctld → slurmd
# The Snakemake SLURM plugin polls job states with `sacct` and checks the account with `sacctmgr`, so a
# cluster without accounting (slurmdbd) would not do. Idempotent: what already runs is left running, and a
# second call returns in about a second. Run as root; exits non-zero, saying why, when it cannot.
#
#   bash .ci/slurm-up.sh         # then `sinfo` shows the node idle; the test finds account and partition
set -euo pipefail

ACCOUNT=srvae               # the account the tests submit under: root's, and that of whoever called sudo
PARTITION=local             # the only partition, the default
MARKER="# written by srvae's .ci/slurm-up.sh"  # only files carrying it are ever overwritten
LOGS=/var/log/slurm

say() { echo "slurm-up: $*" >&2; }
die() { say "$*"; exit 1; }

# `wait_for SECONDS DESCRIPTION COMMAND...`: poll COMMAND every half second until it succeeds.
wait_for() {
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what did not come up within ${seconds}s (logs in $LOGS and /var/log/mysql.err)"
        sleep 0.5
    done
}

[[ $(id -u) == 0 ]] || die "needs root (it installs packages, writes /etc/slurm and starts daemons)"

# --- packages -----------------------------------------------------------------------------------------
# --no-install-recommends: the metapackage slurm-wlm would add the docs, emulators and torque wrappers.
needed=()
for pair in munge:munged mariadb-server:mariadbd slurmdbd:slurmdbd slurmctld:slurmctld slurmd:slurmd \
            slurm-client:sacctmgr; do
    command -v "${pair#*:}" >/dev/null || needed+=("${pair%%:*}")
done
if ((${#needed[@]})); then
    say "installing ${needed[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The lock timeout: other apt users on a shared machine wait for each other instead of failing.
    { apt-get update -qq -o DPkg::Lock::Timeout=300 &&
      apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${needed[@]}"; } >/dev/null ||
        die "apt-get could not install ${needed[*]} (no access to Debian's repositories?)"
fi

# --- configuration ------------------------------------------------------------------------------------
HOST=$(hostname -s)
CLUSTER=$(tr -c 'a-z0-9_\n' _ <<<"${HOST,,}")  # named after the host; SLURM wants lowercase
CPUS=$(nproc)
# RealMemory at 90% of what the kernel reports: a node that has less than its configured memory is drained.
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

# proctrack/linuxproc and task/none: no cgroups, which sandboxes and containers often deny.
# cons_tres with CR_Core: jobs share the node by cores, `--gpus` is understood (and refused: no GPU here).
# job_comment: `sacct` shows the comment the plugin gives each job (its rule and wildcards).
SLURM_CONF="$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP"

# The database user `slurm` logs in over MariaDB's socket as the Unix user `slurm` (unix_socket
# authentication): no password to write down anywhere.
SLURMDBD_CONF="$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db"

# `write_conf PATH MODE TEXT`: write a config file unless it already says TEXT; returns 1 if unchanged.
# Refuses to overwrite a file this script did not write (a real cluster's configuration).
write_conf() {
    local path=$1 mode=$2 text=$3
    if [[ -e $path ]]; then
        [[ $(<"$path") == "$text" ]] && return 1
        head -n1 "$path" | grep -qxF "$MARKER" || die "$path exists and was not written by this script: left alone"
    fi
    printf '%s\n' "$text" >"$path"
    chown slurm:slurm "$path"
    chmod "$mode" "$path"
}

# `alive PID NAME`: PID is a live (not zombie) process called NAME.
alive() {
    local stat_comm
    stat_comm=$(ps -o stat=,comm= -p "$1") && [[ $stat_comm != Z* && ${stat_comm##* } == "$2" ]]
}

# `pid_of NAME`: the pid in /run/NAME.pid if that process is still NAME; fails otherwise. A daemon killed
# with its machine's session leaves its pid file behind, and the pid may since belong to another process.
pid_of() {
    local pid
    pid=$(cat "/run/$1.pid" 2>/dev/null) && alive "$pid" "$1" && echo "$pid"
}

# `stop NAME`: stop that SLURM daemon if it runs, and wait until it has gone.
stop() {
    local pid
    pid=$(pid_of "$1") || return 0
    kill "$pid"
    while alive "$pid" "$1"; do sleep 0.2; done
}

mkdir -p /etc/slurm "$LOGS"
chown slurm:slurm "$LOGS"
# A changed configuration (another host name, CPU count) needs the SLURM daemons restarted.
changed=0
write_conf /etc/slurm/slurm.conf 644 "$SLURM_CONF" && changed=1
write_conf /etc/slurm/slurmdbd.conf 600 "$SLURMDBD_CONF" && changed=1  # slurmdbd insists on 600
if ((changed)); then
    say "configuration written; (re)starting the SLURM daemons"
    stop slurmd; stop slurmctld; stop slurmdbd
fi

# --- munge: authenticates every SLURM message -------------------------------------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    runuser -u munge -- munged  # daemonises itself
    wait_for 10 munged sh -c 'munge -n | unmunge'
fi

# --- MariaDB: the accounting database; socket only, so no port can clash with another server ------------
if ! mysqladmin ping >/dev/null 2>&1; then
    install -d -o mysql -g mysql /run/mysqld
    setsid -f mariadbd --user=mysql --skip-networking --log-error=/var/log/mysql.err </dev/null >/dev/null 2>&1
    wait_for 60 mariadbd mysqladmin ping
fi
mysql <<'SQL'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- slurmdbd, then the cluster, account and user it must know before slurmctld registers -----------------
if ! sacctmgr -n list cluster >/dev/null 2>&1; then
    slurmdbd  # daemonises itself
    wait_for 60 slurmdbd sacctmgr -n list cluster
fi
# `sacctmgr -i add` fails on an existing entity: look first, so that a rerun is quiet.
[[ -n $(sacctmgr -n list cluster "$CLUSTER" format=cluster) ]] || sacctmgr -i add cluster "$CLUSTER" >/dev/null
[[ -n $(sacctmgr -n list account "$ACCOUNT" format=account) ]] ||
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="srvae tests" organization=srvae >/dev/null
users=(root)
[[ -z ${SUDO_USER:-} ]] || users+=("$SUDO_USER")
for user in "${users[@]}"; do
    [[ -n $(sacctmgr -n list assoc user="$user" account="$ACCOUNT" cluster="$CLUSTER" format=user) ]] ||
        sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" defaultaccount="$ACCOUNT" >/dev/null
done

# --- slurmctld and slurmd -------------------------------------------------------------------------------
if ! scontrol ping 2>/dev/null | grep -q UP; then
    slurmctld  # daemonises itself, as SlurmUser
    wait_for 60 slurmctld sh -c 'scontrol ping | grep -q UP'
fi
pid_of slurmd >/dev/null || slurmd
# A node drained by an earlier run (a job that could not be killed, say) is put back into service;
# a node down since its slurmd stopped comes back by itself when slurmd registers (ReturnToService=2).
if sinfo -h -n "$HOST" -o %t | grep -qE '^(drain|drng)'; then
    scontrol update nodename="$HOST" state=resume
fi
wait_for 60 "node $HOST (idle)" sh -c "sinfo -h -n '$HOST' -o %t | grep -qxE 'idle|mix|alloc'"
say "cluster $CLUSTER up in ${SECONDS}s: node $HOST ($CPUS CPUs, $MEM_MB MB), partition $PARTITION, account $ACCOUNT for ${users[*]}"
