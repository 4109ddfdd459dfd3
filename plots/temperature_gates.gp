# temperature_gates.gp: Reproduction 1's figure from a run of experiments/temperature_gates.lua:
# (a) Voronoi loss against n, exact-specified (k = 2); (b) the same over-specified (k = 3);
# (c) Hellinger distance of the fitted conditional density (solid: exact, dotted: over). Lines:
# geometric mean over repetitions; bands: +-1 std of log10; dashed thin lines and the key: the
# least-squares slope in log-log space. Usage (gmoe plot temperature_gates does this per format):
#   gnuplot -e "dir='runs/temperature_gates/latest'; fmt='pdf'; out='fig.pdf'" plots/temperature_gates.gp
if (!exists('dir')) dir = 'runs/temperature_gates/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/temperature_gates.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
eval term_cmd(fmt, FULL, 2.3)
set output out
NA = words(arms)
NS = words(settings)
file = dir . '/curves.tsv'
idx(s, a) = (s - 1) * NA + (a - 1)
sidx(name) = (words(settings) >= 1 && word(settings, 1) eq name) ? 1 : (words(settings) >= 2 && word(settings, 2) eq name) ? 2 : 0

set multiplot layout 1,3 margins 0.07,0.99,0.19,0.88 spacing 0.07,0
set logscale xy
set format x LOG10
set format y LOG10
set xlabel 'sample size n' offset 0,0.6
set key bottom left samplen 1.5 spacing 0.9 font ',7'

do for [panel in 'exact over'] {
  s = sidx(panel)
  set title (panel eq 'exact' ? '(a) exact-specified, k = 2' : '(b) over-specified, k = 3') offset 0,-0.6
  set ylabel (panel eq 'exact' ? 'Voronoi loss' : '') offset 1.5,0
  if (s > 0) {
    array KEY[NA]
    array FA[NA]
    array FB[NA]
    do for [a = 1:NA] {
      FIT_FILE = file; FIT_INDEX = idx(s, a); FIT_X = 1; FIT_Y = 2; load here . '/fit_slope.gp'
      KEY[a] = sprintf('%s  %.2f', word(arms, a), FIT_B)
      FA[a] = FIT_A; FB[a] = FIT_B
    }
    plot for [a = 1:NA] file index idx(s, a) using 1:3:4 with filledcurves lt a notitle, \
         for [a = 1:NA] file index idx(s, a) using 1:2 with linespoints lt a title KEY[a], \
         for [a = 1:NA] 10**FA[a] * x**FB[a] with lines lt a dt 2 lw 0.6 notitle
  } else {
    # this setting was not run: an empty panel that says so
    set label 1 'not in this run' at graph 0.5, graph 0.5 center front
    set yrange [0.01:1]
    plot 0.1 lc rgb '#ffffff' notitle
    unset label 1
    set autoscale y
  }
}

# (c): solid lines for the first setting that was run (exact when present), dotted for the other
set title '(c) density (Hellinger)' offset 0,-0.6
set ylabel ''
d1 = sidx('exact') > 0 ? sidx('exact') : 1
d2 = (sidx('exact') > 0 && sidx('over') > 0) ? sidx('over') : 0
array DKEY[NA]
array DA[NA]
array DB[NA]
do for [a = 1:NA] {
  FIT_FILE = file; FIT_INDEX = idx(d1, a); FIT_X = 1; FIT_Y = 8; load here . '/fit_slope.gp'
  DKEY[a] = sprintf('%s  %.2f', word(arms, a), FIT_B)
  DA[a] = FIT_A; DB[a] = FIT_B
}
if (d2 > 0) {
  plot for [a = 1:NA] file index idx(d1, a) using 1:9:10 with filledcurves lt a notitle, \
       for [a = 1:NA] file index idx(d1, a) using 1:8 with linespoints lt a title DKEY[a], \
       for [a = 1:NA] file index idx(d2, a) using 1:8 with lines lt a dt 3 lw 1 notitle, \
       for [a = 1:NA] 10**DA[a] * x**DB[a] with lines lt a dt 2 lw 0.6 notitle
} else {
  plot for [a = 1:NA] file index idx(d1, a) using 1:9:10 with filledcurves lt a notitle, \
       for [a = 1:NA] file index idx(d1, a) using 1:8 with linespoints lt a title DKEY[a], \
       for [a = 1:NA] 10**DA[a] * x**DB[a] with lines lt a dt 2 lw 0.6 notitle
}
unset multiplot
unset output
