# topk_gating_rates.gp: Reproduction 2's figure from a run of experiments/topk_gating_rates.lua:
# one panel per error (gate masses, expert a, b, nu, their sum, the region-wise Voronoi loss with
# the cell-size exponents, the Hellinger distance of the conditional density), one line per setting
# (exact k = 2, K = 1; over-specified k = 3 with K = 1 and K = 2). Lines: mean over repetitions;
# bands: +- one standard error; dashed: the least-squares slope in log-log space (computed by the
# experiment, layout.gp); the key gives slope +- standard error [expected slope].
# Usage (gmoe plot topk_gating_rates does this per format):
#   gnuplot -e "dir='runs/topk_gating_rates/latest'; fmt='pdf'; out='fig.pdf'" plots/topk_gating_rates.gp
if (!exists('dir')) dir = 'runs/topk_gating_rates/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/topk_gating_rates.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
eval term_cmd(fmt, FULL, 3.6)
set output out
NS = words(settings)
NQ = words(params)
file = dir . '/summary.tsv'
idx(q, s) = (q - 1) * NS + (s - 1)
ptitle(name) = name eq 'mass' ? 'gate masses {/Symbol p}' : name eq 'a' ? 'expert slopes a' : \
               name eq 'b' ? 'expert intercepts b' : name eq 'nu' ? 'expert variances {/Symbol n}' : \
               name eq 'expert' ? 'experts (a + b + {/Symbol n})' : name eq 'voronoi' ? 'Voronoi loss' : \
               'density (Hellinger)'
label(name) = name eq 'exact' ? 'exact K=1' : name eq 'over_small' ? 'over K=1' : 'over K=2'
keytext(name, i) = SL[i + 1] == SL[i + 1] ? sprintf('%s %.2f{/Symbol \261}%.2f%s', label(name), SL[i + 1], SE[i + 1], \
                   EX[i + 1] == EX[i + 1] ? sprintf(' [%g]', EX[i + 1]) : '') : label(name)

set multiplot layout 2, 4 margins 0.06, 0.995, 0.08, 0.95 spacing 0.045, 0.1
set logscale xy
set format x LOG10
set format y LOG10
set xtics font ',7'
set ytics font ',7'
set xlabel 'n' offset 0, 1 font ',8'
set key bottom left samplen 0.8 spacing 0.8 font ',6'
do for [q = 1:NQ] {
  set title ptitle(word(params, q)) offset 0, -0.8 font ',8'
  # the over-specified K = 1 Voronoi loss climbs: its key goes where the lines are not
  if (word(params, q) eq 'voronoi') { set key top left } else { set key bottom left }
  plot for [s = 1:NS] file index idx(q, s) using 3:($4 - $5 > $4 / 10 ? $4 - $5 : $4 / 10):($4 + $5) \
         with filledcurves lt s notitle, \
       for [s = 1:NS] file index idx(q, s) using 3:4 with linespoints lt s title keytext(word(settings, s), idx(q, s)), \
       for [s = 1:NS] (SL[idx(q, s) + 1] == SL[idx(q, s) + 1] ? 10**IC[idx(q, s) + 1] * x**SL[idx(q, s) + 1] : 1/0) \
         with lines lt s dt 2 lw 0.5 notitle
}
unset multiplot
unset output
