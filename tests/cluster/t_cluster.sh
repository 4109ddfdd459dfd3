#!/bin/sh
# t_cluster.sh (make test-cluster): gmoe sweeps on a real scheduler. Starts munge and a one-node
# Slurm (2 CPUs, one partition) from a config generated in a temporary folder, submits sweeps
# of experiments/regression_demo.lua (and a probe experiment that fails on purpose) with sbatch,
# then the same through GNU parallel -j 2, and checks DONE, resume and summary.tsv, failure
# reports with log paths, and cancel-then-resubmit. TAP on stdout. Whatever the outcome, the
# jobs are cancelled, the daemons stopped by their pids and the folder removed.
set -u
REPO=$(pwd)
GMOE=${GMOE:-build/gmoe}
case $GMOE in /*) ;; *) GMOE=$REPO/$GMOE ;; esac
T=$(mktemp -d /tmp/gmoe-cluster.XXXXXX) || exit 1
chmod 755 "$T" # munged wants every folder above its socket searchable by all
DEADLINE=$(($(date +%s) + ${GMOE_CLUSTER_TIMEOUT:-240}))
pids=""
groups="" # process groups we started (parallel and its jobs)
ctld="" # slurmctld's pid: scancel needs it alive during the clean-up

cleanup() {
    if [ -n "$ctld" ] && kill -0 "$ctld" 2>/dev/null; then
        scancel --me >/dev/null 2>&1
        i=0
        while [ -n "$(squeue --me -h 2>/dev/null)" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    fi
    for g in $groups; do kill -TERM "-$g" 2>/dev/null; done
    for p in $pids; do kill "$p" 2>/dev/null; done
    for p in $pids; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$p" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

n=0
fails=0
ok() { # ok STATUS DESCRIPTION [DIAGNOSTIC]
    n=$((n + 1))
    if [ "$1" = 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        fails=$((fails + 1))
        [ -n "${3:-}" ] && printf '%s\n' "$3" | sed 's/^/# /'
    fi
}
check() { # check DESCRIPTION COMMAND...
    d=$1
    shift
    if "$@"; then ok 0 "$d"; else ok 1 "$d"; fi
}
bail() {
    echo "Bail out! $1"
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 20 "$2" | sed 's/^/# /'
    exit 1
}
# until COND TIMEOUT_S: poll a shell condition every 0.2 s, within the overall deadline.
until_true() {
    end=$(($(date +%s) + $2))
    [ $end -gt $DEADLINE ] && end=$DEADLINE
    while ! eval "$1"; do
        [ "$(date +%s)" -ge $end ] && return 1
        sleep 0.2
    done
}

for c in munged mungekey slurmctld slurmd sbatch squeue scancel parallel; do
    command -v $c >/dev/null 2>&1 || bail "$c not found: run 'sh tests/deps.sh cluster' (as root)"
done
[ -x "$GMOE" ] || bail "no gmoe binary at $GMOE"

# ---- munge and a one-node Slurm on localhost -----------------------------------------------
mkdir -p "$T/state" "$T/spool" "$T/log" "$T/elsewhere"
mkdir -m 755 "$T/run"
mungekey --create --keyfile="$T/munge.key" || bail 'mungekey failed'
munged -F --socket="$T/run/munge.socket" --key-file="$T/munge.key" --pid-file="$T/run/munged.pid" \
    --seed-file="$T/munged.seed" --log-file="$T/log/munged.log" >"$T/log/munged.out" 2>&1 &
pids="$pids $!"
until_true '[ -S "$T/run/munge.socket" ]' 10 || bail 'munged did not start' "$T/log/munged.out"

host=$(hostname -s)
user=$(id -un)
port=$((20000 + $$ % 20000))
cat >"$T/slurm.conf" <<EOF
ClusterName=gmoetest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$T/run/munge.socket
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=2
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=gmoe Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$T/slurm.conf"
slurmctld -D -f "$SLURM_CONF" >"$T/log/slurmctld.out" 2>&1 &
ctld=$!
pids="$pids $ctld"
slurmd -D -f "$SLURM_CONF" >"$T/log/slurmd.out" 2>&1 &
pids="$pids $!"
until_true '[ "$(sinfo -h -o %T 2>/dev/null)" = idle ]' 30 ||
    bail "Slurm did not come up (sinfo: $(sinfo -h -o %T 2>&1))" "$T/log/slurmctld.out"
echo "# Slurm $(sinfo -V | cut -d' ' -f2) on $host:$port, partition gmoe, 2 CPUs; folder $T"

# ---- helpers over sweeps --------------------------------------------------------------------
# The probe: records its thread count, fails on purpose when seed == fail.
cat >"$T/cluster_probe.lua" <<'EOF'
local gm = require 'gmoe'
return gm.experiment {
  name = 'cluster_probe', description = 'make test-cluster: threads, and a job that fails on purpose',
  config = {seed = 1, fail = 0},
  run = function(cfg, run)
    run:metric('threads', gm.get_num_threads())
    if cfg.seed == cfg.fail then error(('cluster_probe: job seed=%d fails on purpose'):format(cfg.seed)) end
  end,
}
EOF
sweep() { "$GMOE" sweep "$@" 2>"$T/err"; } # stdout: the path it prints; stderr kept in $T/err
wait_array() { # wait_array JOBID: until Slurm holds no task of the array
    W=$1
    until_true '[ -z "$(squeue -h -j $W 2>/dev/null)" ]' 120
}
ndone() { # ndone ROOT NAME: finished run folders of NAME under ROOT
    ls -d "$1/$2"/[0-9]*/DONE 2>/dev/null | wc -l
}
# The 0-based indices of a summary.tsv's jobs whose status is (or with "!" is not) $2.
indices() {
    awk -F'\t' -v want="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "status" || $i == "# status") c = i; next }
        (substr(want, 1, 1) == "!" ? $c != substr(want, 2) : $c == want) { printf "%d ", NR - 2 }' "$1"
}
commit=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || true)
cd "$REPO" || exit 1
DEMO=experiments/regression_demo.lua # relative: the emitted jobs must not depend on where they run

# ---- Slurm: a sweep runs to DONE, resume and summary.tsv, gmoe plot -------------------------
R=$T/slurm
sb=$(sweep $DEMO --quick seed=1..4 --emit slurm --out "$R" --time 5 --mem 100M --partition gmoe)
ok $? 'gmoe sweep --emit slurm writes an array script' "$(cat "$T/err")"
sdir=$(dirname "$sb")
check 'the array is unthrottled by default' grep -qx '#SBATCH --array=0-3' "$sb"
check 'resources go to #SBATCH lines' sh -c "grep -qx '#SBATCH --time=5' '$sb' && grep -qx '#SBATCH --mem=100M' '$sb' &&
    grep -qx '#SBATCH --partition=gmoe' '$sb' && grep -qx '#SBATCH --cpus-per-task=1' '$sb'"
jid=$(cd "$T/elsewhere" && sbatch --parsable "$sb") || bail 'sbatch refused the script'
wait_array "$jid"
ok $? "array $jid finishes within the time limit" "$(squeue 2>&1)"
check 'every job of the array has DONE' [ "$(ndone "$R" regression_demo)" = 4 ]
check 'each job ran in its own Slurm task, logging into the sweep folder' \
    [ "$(ls "$sdir"/slurm-"$jid"_*.out 2>/dev/null | wc -l)" = 4 ]
metas() { grep -l "$1" "$R"/regression_demo/[0-9]*/meta.json 2>/dev/null | wc -l; }
check 'meta.json records the Slurm job' [ "$(metas "\"array_job_id\": \"$jid\"")" = 4 ]
check 'threads come from SLURM_CPUS_PER_TASK' [ "$(metas '"threads": 1,')" = 4 ]
check 'no runs folder appears where sbatch ran' [ ! -e "$T/elsewhere/runs" ]
if [ -n "$commit" ]; then
    check 'the git commit is recorded as in local runs' [ "$(metas "\"commit\": \"$commit\"")" = 4 ]
else
    echo "ok $((n = n + 1)) # SKIP the git commit (not a git checkout)"
fi
s=$(sweep $DEMO --quick seed=1..4 --out "$R")
ok $? 'gmoe sweep (resume) succeeds' "$(cat "$T/err")"
check 'it finds every job done' grep -q '4 already done' "$T/err"
check 'summary.tsv: a row per job, each with its final loss' \
    [ "$(awk -F'\t' 'NR > 1 && $2 == "skipped" && $4 ~ /^[0-9.e-]+$/' "$s" | wc -l)" = 4 ]
run1=$(awk -F'\t' 'NR == 2 { print $NF }' "$s")
if command -v gnuplot >/dev/null 2>&1; then
    "$GMOE" plot regression_demo "$run1" >/dev/null 2>"$T/err"
    ok $? 'gmoe plot renders a job of the sweep' "$(cat "$T/err")"
fi

# ---- Slurm: a failing job is reported with its Slurm log -------------------------------------
sb=$(sweep "$T/cluster_probe.lua" seed=1..3 fail=2 --emit slurm --out "$R" --cpus-per-task 2)
jid=$(cd "$T/elsewhere" && sbatch --parsable "$sb") || bail 'sbatch refused the probe'
wait_array "$jid"
ok $? "probe array $jid finishes" "$(squeue 2>&1)"
s=$(sweep "$T/cluster_probe.lua" seed=1..3 fail=2 --out "$R" --status)
check 'gmoe sweep --status fails while a job failed' [ $? != 0 ]
log=$(dirname "$sb")/slurm-${jid}_1.out
check 'the failed job is reported with its Slurm log' grep -qF "log: $log" "$T/err"
check 'the report quotes its error' grep -q 'job 2/3 (seed=2 fail=2) failed: .*fails on purpose' "$T/err"
check 'the Slurm log holds the error' grep -q 'fails on purpose' "$log"
check 'summary.tsv marks it failed, the others done' [ "$(cut -f2 "$s" | tr '\n' ' ')" = 'status done failed done ' ]
check '--cpus-per-task 2 gives each job 2 threads' [ "$(awk -F'\t' '$2 == "done" { print $3 }' "$s" | tr '\n' ' ')" = '2 2 ' ]

# ---- Slurm: scancel mid-way, resubmit: only the missing jobs run -----------------------------
sb=$(sweep $DEMO seed=1..5 --emit slurm --max-running 1 --out "$R/cancel")
sdir=$(dirname "$sb")
check '--max-running 1 throttles the array' grep -qx '#SBATCH --array=0-4%1' "$sb"
jid=$(cd "$T/elsewhere" && sbatch --parsable "$sb") || bail 'sbatch refused the sweep'
most=0
until_true '[ "$(ndone "$R/cancel" regression_demo)" -ge 1 ] ||
    { r=$(squeue -h -j $jid -t RUNNING | wc -l); [ $r -gt $most ] && most=$r; false; }' 60
ok $? 'the first job finishes'
scancel "$jid"
wait_array "$jid"
ok $? 'scancel empties the queue'
check 'at most one task ran at a time' [ "$most" -le 1 ]
s=$(sweep $DEMO seed=1..5 --out "$R/cancel" --status)
done_before=$(indices "$s" done)
k=$(echo $done_before | wc -w)
check "cancelled mid-way ($k of 5 done)" [ "$k" -ge 1 -a "$k" -lt 5 ]
sb=$(sweep $DEMO seed=1..5 --emit slurm --max-running 1 --out "$R/cancel")
arr=$(sed -n 's/^#SBATCH --array=\([^%]*\).*/\1/p' "$sb")
expect=$(indices "$s" '!done')
got=$(echo "$arr" | tr ',' '\n' | awk -F- '{ for (i = $1; i <= ($2 == "" ? $1 : $2); i++) print i }' | sort -n | tr '\n' ' ')
[ "$got" = "$expect" ]
ok $? "the resubmitted array holds only the missing jobs ($arr)" "got $got, want $expect; $(cat "$s" "$T/err")"
jid2=$(cd "$T/elsewhere" && sbatch --parsable "$sb") || bail 'sbatch refused the resubmission'
wait_array "$jid2"
ok $? "resubmitted array $jid2 finishes"
check 'now every job has DONE' [ "$(ndone "$R/cancel" regression_demo)" = 5 ]
reran=0
for i in $done_before; do [ -e "$sdir/slurm-${jid2}_$i.out" ] && reran=$((reran + 1)); done
check 'no job finished before the cancel ran again' [ $reran = 0 ]
s=$(sweep $DEMO seed=1..5 --out "$R/cancel" --status)
ok $? 'gmoe sweep --status: all done' "$(cat "$T/err")"

# ---- GNU parallel -j 2: the same -------------------------------------------------------------
P=$T/parallel
pl=$(sweep $DEMO --quick seed=1..4 --emit parallel --out "$P")
ok $? 'gmoe sweep --emit parallel writes a job list' "$(cat "$T/err")"
(cd "$T/elsewhere" && parallel -j 2 <"$pl" >/dev/null 2>&1)
ok $? 'parallel -j 2 runs it'
check 'every job has DONE' [ "$(ndone "$P" regression_demo)" = 4 ]
s=$(sweep $DEMO --quick seed=1..4 --out "$P")
ok $? 'gmoe sweep (resume) succeeds' "$(cat "$T/err")"
check 'it finds every job done and writes summary.tsv' \
    sh -c "grep -q '4 already done' '$T/err' && [ \$(grep -c skipped '$s') = 4 ]"

pl=$(sweep "$T/cluster_probe.lua" seed=1..3 fail=2 --emit parallel --out "$P" --cpus-per-task 2)
(cd "$T/elsewhere" && parallel -j 2 <"$pl" >/dev/null 2>&1)
check 'parallel reports the failure in its exit status' [ $? = 1 ]
s=$(sweep "$T/cluster_probe.lua" seed=1..3 fail=2 --out "$P" --status)
log=$(dirname "$pl")/job-2.log
check 'the failed job is reported with its log' grep -qF "log: $log" "$T/err"
check 'the log holds the error' grep -q 'fails on purpose' "$log"
check '--cpus-per-task 2 gives each job 2 threads' [ "$(awk -F'\t' '$2 == "done" { print $3 }' "$s" | tr '\n' ' ')" = '2 2 ' ]

pl=$(sweep $DEMO seed=1..5 --emit parallel --out "$P/cancel")
# parallel in a process group of its own, stopped as Ctrl-C would: the group, jobs included
# (a SIGTERM to parallel alone can leave the running job behind, orphaned)
(cd "$T/elsewhere" && exec setsid parallel -j 1 <"$pl" >/dev/null 2>&1) &
par=$!
groups="$par"
until_true '[ "$(ndone "$P/cancel" regression_demo)" -ge 1 ]' 60
ok $? 'the first job finishes'
kill -TERM "-$par"
until_true '[ -z "$(pgrep -g $par)" ]' 30
ok $? 'parallel and its jobs stop on SIGTERM to their group'
s=$(sweep $DEMO seed=1..5 --out "$P/cancel" --status)
done_before=$(indices "$s" done)
k=$(echo $done_before | wc -w)
check "stopped mid-way ($k of 5 done)" [ "$k" -ge 1 -a "$k" -lt 5 ]
pl=$(sweep $DEMO seed=1..5 --emit parallel --out "$P/cancel")
[ "$(wc -l <"$pl")" = $((5 - k)) ]
ok $? 'the new job list holds only the missing jobs' "$(cat "$s" "$pl" "$T/err")"
(cd "$T/elsewhere" && parallel -j 2 <"$pl" >/dev/null 2>&1)
ok $? 'parallel -j 2 runs them'
check 'now every job has DONE' [ "$(ndone "$P/cancel" regression_demo)" = 5 ]
s=$(sweep $DEMO seed=1..5 --out "$P/cancel" --status)
ok $? 'gmoe sweep --status: all done' "$(cat "$T/err")"

echo "1..$n"
[ $fails = 0 ]
