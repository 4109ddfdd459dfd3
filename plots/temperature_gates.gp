# temperature_gates.gp: Reproduction 1's figure from a run of experiments/temperature_gates.lua.
# One row per setting x start protocol (exact / over-specified; near the truth, spread along the
# (beta, tau) ray, random), one column per error: |tau - tau*|, beta1, beta1 / tau, the expert
# parameters (a + b + nu), the Voronoi loss with the cell-size exponents, and the Hellinger distance
# of the conditional density. Lines: mean over repetitions; bands: +- one standard error; dashed:
# the least-squares slope in log-log space (computed by the experiment, layout.gp); the key gives
# slope +- standard error [the paper's expected slope]. Usage (gmoe plot temperature_gates does this):
#   gnuplot -e "dir='runs/temperature_gates/latest'; fmt='pdf'; out='fig.pdf'" plots/temperature_gates.gp
if (!exists('dir')) dir = 'runs/temperature_gates/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/temperature_gates.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
NS = words(settings)
NP = words(protocols)
NA = words(arms)
NQ = words(params)
ROWS = NS * NP
eval term_cmd(fmt, FULL, 0.2 + 1.45 * ROWS)
set output out
file = dir . '/summary.tsv'
# data set of (setting s, protocol p, parameter q, arm a), all 1-based, as the experiment wrote them
idx(s, p, q, a) = (((s - 1) * NP + (p - 1)) * NQ + (q - 1)) * NA + (a - 1)
qidx(name) = sum [i = 1:NQ] (word(params, i) eq name ? i : 0)
PANELS = 'tau beta1 ratio expert voronoi density'
ptitle(name) = name eq 'tau' ? '|{/Symbol t} - {/Symbol t}^*|' : name eq 'beta1' ? '{/Symbol b}_1 error' : \
               name eq 'ratio' ? '{/Symbol b}_1/{/Symbol t} error' : name eq 'expert' ? 'experts (a, b, {/Symbol n})' : \
               name eq 'voronoi' ? 'Voronoi loss' : 'density (Hellinger)'
short(a) = a eq 'temperature' ? 'temp' : a eq 'softmax' ? 'soft' : a eq 'sigmoid' ? 'sigm' : a
sl(i) = SL[i + 1]
keytext(a, i) = sl(i) == sl(i) ? sprintf('%s %.2f{/Symbol \261}%.2f%s', short(a), sl(i), SE[i + 1], \
                EX[i + 1] == EX[i + 1] ? sprintf(' [%g]', EX[i + 1]) : '') : sprintf('%s -', short(a))
has(q, a) = !(word(params, q) eq 'tau' && word(arms, a) eq 'softmax')

set multiplot layout ROWS, 6 margins 0.06, 0.995, 0.045, 0.975 spacing 0.035, 0.03
set logscale xy
set format x LOG10
set format y LOG10
set xtics font ',6' offset 0, 0.4
set ytics font ',6' offset 0.5, 0
set key top right samplen 0.8 spacing 0.75 font ',5'

do for [s = 1:NS] {
  do for [p = 1:NP] {
    row = (s - 1) * NP + p
    do for [c = 1:6] {
      pname = word(PANELS, c)
      q = qidx(pname)
      # falling curves leave the top right free, but the temperature gate's flat tau, beta1 and
      # Voronoi curves sit there: those keys go bottom left
      if (pname eq 'tau' || pname eq 'beta1' || pname eq 'voronoi') { set key bottom left } else { set key top right }
      # a few fits at local maxima of the random rows reach 1e25 and would flatten every other curve:
      # those panels stop at 1e4 (the spikes leave the top; the TSV has every value and the medians)
      if (pname eq 'voronoi' || pname eq 'ratio') { set yrange [*:1e4] } else { set autoscale y }
      set title (row == 1 ? ptitle(pname) : '') offset 0, -0.8 font ',8'
      set ylabel (c == 1 ? sprintf('%s, %s', word(settings, s), word(protocols, p)) : '') offset 2.2, 0 font ',8'
      set xlabel (row == ROWS ? 'n' : '') offset 0, 1.2 font ',7'
      plot for [a = 1:NA] file index idx(s, p, q, a) \
             using 5:($6 - $7 > $6 / 10 ? $6 - $7 : $6 / 10):($6 + $7) with filledcurves lt a notitle, \
           for [a = 1:NA] file index idx(s, p, q, a) using 5:6 with linespoints lt a \
             title (has(q, a) ? keytext(word(arms, a), idx(s, p, q, a)) : ''), \
           for [a = 1:NA] (sl(idx(s, p, q, a)) == sl(idx(s, p, q, a)) ? \
             10**IC[idx(s, p, q, a) + 1] * x**SL[idx(s, p, q, a) + 1] : 1/0) with lines lt a dt 2 lw 0.5 notitle
    }
  }
}
unset multiplot
unset output
