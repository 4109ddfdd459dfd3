#!/bin/sh
# all.sh: the body of `make figures`. Runs every experiments/<name>.lua that has a
# plots/<name>.gp (with --quick when QUICK=1) into runs/<name>/latest, then renders the
# figure there. Stops at the first failure. GMOE is the gmoe binary.
set -eu
GMOE=${GMOE:-build/gmoe}
QUICK=${QUICK:-0}
command -v gnuplot >/dev/null 2>&1 || { echo "all.sh: gnuplot not found (Debian package gnuplot-nox)" >&2; exit 1; }
[ -x "$GMOE" ] || { echo "all.sh: gmoe binary '$GMOE' not found (run make first)" >&2; exit 1; }

quick=""
[ "$QUICK" = 1 ] && quick="--quick"
made=""
for exp in experiments/*.lua; do
    name=$(basename "$exp" .lua)
    [ -f "plots/$name.gp" ] || continue
    out="runs/$name/latest"
    mkdir -p "$out"
    echo "== $name${quick:+ (quick)}" >&2
    "$GMOE" "$exp" $quick "out=$out" || { echo "all.sh: experiment $name failed" >&2; exit 1; }
    gnuplot -e "dir='$out'" "plots/$name.gp" || { echo "all.sh: plot $name failed" >&2; exit 1; }
    made="$made $out/$name.pdf $out/$name.png"
done
[ -n "$made" ] || { echo "all.sh: no experiment has a plot script" >&2; exit 1; }
echo "figures:"
for f in $made; do echo "  $f"; done
