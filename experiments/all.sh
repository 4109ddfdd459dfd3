#!/bin/sh
# all.sh: the body of `make figures`. Runs every experiments/<name>.lua that has a
# plots/<name>.gp through the runner (`gmoe run`, with --quick when QUICK=1) into
# $GMOE_RUNS/<name>/<timestamp>-<id>/ (runs/ by default; a finished run of the same config is
# reused), then renders the figure there with `gmoe plot <name>` (PDF, PNG, SVG).
# Stops at the first failure. GMOE is the gmoe binary.
set -eu
GMOE=${GMOE:-build/gmoe}
QUICK=${QUICK:-0}
RUNS=${GMOE_RUNS:-runs}
export GMOE_RUNS="$RUNS"
command -v gnuplot >/dev/null 2>&1 || { echo "all.sh: gnuplot not found (Debian package gnuplot-nox)" >&2; exit 1; }
[ -x "$GMOE" ] || { echo "all.sh: gmoe binary '$GMOE' not found (run make first)" >&2; exit 1; }

quick=""
[ "$QUICK" = 1 ] && quick="--quick"
made=""
for exp in experiments/*.lua; do
    name=$(basename "$exp" .lua)
    [ -f "plots/$name.gp" ] || continue
    echo "== $name${quick:+ (quick)}" >&2
    "$GMOE" run "$exp" $quick >/dev/null || { echo "all.sh: experiment $name failed" >&2; exit 1; }
    "$GMOE" plot "$name" >/dev/null || { echo "all.sh: plot $name failed" >&2; exit 1; }
    made="$made $RUNS/$name/latest/$name.pdf $RUNS/$name/latest/$name.png $RUNS/$name/latest/$name.svg"
done
[ -n "$made" ] || { echo "all.sh: no experiment has a plot script" >&2; exit 1; }
echo "figures:"
for f in $made; do echo "  $f"; done
