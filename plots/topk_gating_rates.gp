# topk_gating_rates.gp: Reproduction 2's figure from a run of experiments/topk_gating_rates.lua:
# (a)-(c) one panel per setting (exact k = 2, K = 1; over-specified k = 3 with K = 1 and K = 2):
# the region-wise Voronoi loss and the parameter error (the same sum without the Voronoi exponents)
# against n; (d) Hellinger distance of the fitted conditional density, one line per setting. Lines:
# geometric mean over repetitions; bands: +-1 std of log10; dashed thin lines and the key: the
# least-squares slope in log-log space. Usage (gmoe plot topk_gating_rates does this per format):
#   gnuplot -e "dir='runs/topk_gating_rates/latest'; fmt='pdf'; out='fig.pdf'" plots/topk_gating_rates.gp
if (!exists('dir')) dir = 'runs/topk_gating_rates/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/topk_gating_rates.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
eval term_cmd(fmt, FULL, 2.3)
set output out
NS = words(settings)
file = dir . '/curves.tsv'
sidx(name) = sum [i = 1:NS] (word(settings, i) eq name ? i : 0)
TITLES = 'exact over_small over_enough'
title_of(name) = name eq 'exact' ? 'exact, k = 2, K = 1' : name eq 'over_small' ? 'over, k = 3, K = 1' : 'over, k = 3, K = 2'

set multiplot layout 1,4 margins 0.06,0.99,0.19,0.88 spacing 0.055,0
set logscale xy
set format x LOG10
set format y LOG10
set xlabel 'sample size n' offset 0,0.6
set key bottom left samplen 1.5 spacing 0.9 font ',7'

p = 0
do for [panel in TITLES] {
  p = p + 1
  s = sidx(panel)
  set title sprintf('(%s) %s', p == 1 ? 'a' : p == 2 ? 'b' : 'c', title_of(panel)) offset 0,-0.6
  set ylabel (p == 1 ? 'loss' : '') offset 1.5,0
  if (s > 0) {
    FIT_FILE = file; FIT_INDEX = s - 1; FIT_X = 1; FIT_Y = 2; load here . '/fit_slope.gp'
    VA = FIT_A; VB = FIT_B
    FIT_FILE = file; FIT_INDEX = s - 1; FIT_X = 1; FIT_Y = 5; load here . '/fit_slope.gp'
    PA = FIT_A; PB = FIT_B
    plot file index s - 1 using 1:3:4 with filledcurves lt 1 notitle, \
         file index s - 1 using 1:6:7 with filledcurves lt 2 notitle, \
         file index s - 1 using 1:2 with linespoints lt 1 title sprintf('Voronoi  %.2f', VB), \
         file index s - 1 using 1:5 with linespoints lt 2 title sprintf('param  %.2f', PB), \
         10**VA * x**VB with lines lt 1 dt 2 lw 0.6 notitle, \
         10**PA * x**PB with lines lt 2 dt 2 lw 0.6 notitle
  } else {
    set label 1 'not in this run' at graph 0.5, graph 0.5 center front
    set yrange [0.01:1]
    plot 0.1 lc rgb '#ffffff' notitle
    unset label 1
    set autoscale y
  }
}

set title '(d) density (Hellinger)' offset 0,-0.6
set ylabel ''
array DKEY[NS]
array DA[NS]
array DB[NS]
do for [s = 1:NS] {
  FIT_FILE = file; FIT_INDEX = s - 1; FIT_X = 1; FIT_Y = 8; load here . '/fit_slope.gp'
  DKEY[s] = sprintf('%s  %.2f', word(settings, s), FIT_B)
  DA[s] = FIT_A; DB[s] = FIT_B
}
set key noenhanced
plot for [s = 1:NS] file index s - 1 using 1:9:10 with filledcurves lt s + 2 notitle, \
     for [s = 1:NS] file index s - 1 using 1:8 with linespoints lt s + 2 title DKEY[s], \
     for [s = 1:NS] 10**DA[s] * x**DB[s] with lines lt s + 2 dt 2 lw 0.6 notitle
unset multiplot
unset output
