#!/bin/sh
# deps.sh: install the Debian packages gmoe needs (called by `make deps`; `sh tests/deps.sh
# cluster` adds Slurm, munge and GNU parallel for `make test-cluster`). A no-op when all are
# present; as root it runs apt-get, otherwise it prints the exact command and fails.
missing=""
need() { # need CHECK PACKAGE
    if ! sh -c "$1" >/dev/null 2>&1; then missing="$missing $2"; fi
}
need 'command -v cc' gcc
need 'command -v make' make
need 'command -v pkg-config' pkg-config
need 'pkg-config --exists lua5.4' liblua5.4-dev
need 'pkg-config --exists openblas' libopenblas-dev
need 'pkg-config --exists readline' libreadline-dev
need 'pkg-config --exists libzmq' libzmq3-dev
need 'pkg-config --exists libcrypto' libssl-dev
need 'command -v gnuplot' gnuplot-nox
need 'command -v prove' perl
need 'command -v git' git
need '/usr/bin/python3 -c "import jupyter_client"' python3-jupyter-client
need '/usr/bin/python3 -c "import nbclient"' python3-nbclient
need 'command -v jupyter' jupyter-core
need 'command -v jupyter-nbconvert' jupyter-nbconvert
if [ "${1:-}" = cluster ]; then
    need 'command -v slurmctld && command -v slurmd && command -v sbatch' slurm-wlm
    need 'command -v munged && command -v mungekey' munge
    need 'command -v parallel' parallel
fi
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "make deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends $missing
else
    echo "make deps: missing Debian packages:$missing" >&2
    echo "run: sudo apt-get install -y$missing" >&2
    exit 1
fi
