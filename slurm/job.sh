#!/bin/sh
# The fixed batch script of every job the supervisor submits (supervisor/slurm.py):
#   sbatch [options] slurm/job.sh PYTHON -S supervisor/shim.py WORK STDOUT STDERR EXIT NOTIFICATIONS \
#          [log_bytes=N] -- PROGRAM ARGS...
# The job's argv arrives as this script's arguments, so no shell command line
# is ever built from inputs.
#
# Slurm delivers signals (scancel --signal, the time limit) to this script's
# process group, so the shim and the program stay in it. The script ignores
# them: it must outlive the shim, which records the program's end. Then, as the
# local executor does, it kills whatever the job left behind in the group (with
# proctrack/linuxproc Slurm loses track of orphaned processes).
trap '' TERM INT HUP
"$@"
status=$?

me=$$
# /proc/PID/stat after "PID (COMM) ": state ppid pgrp ...; builtins only, no forks
if read -r line <"/proc/$me/stat"; then
    set -- ${line##*) }
    if [ "$3" = "$me" ]; then  # only a group this script leads
        for stat in /proc/[0-9]*/stat; do
            read -r line <"$stat" 2>/dev/null || continue
            set -- ${line##*) }
            [ "$3" = "$me" ] || continue
            pid=${stat#/proc/}
            pid=${pid%/stat}
            [ "$pid" = "$me" ] || kill -KILL "$pid" 2>/dev/null
        done
    fi
fi
exit "$status"
