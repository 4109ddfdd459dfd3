# associative_recall.gp: the MQAR figure from a run of experiments/associative_recall.lua (zoology's
# Figure 2): one panel per setting (T, D) with validation accuracy (max over learning rates) against
# d_model on a log2 axis, one line per mixer; a last panel with the same accuracies against the
# training time of those runs for one setting (layout.gp's time_setting): which mixer solves it
# cheapest. Reads best.tsv (one data set per setting x mixer, in layout.gp's order). Usage:
#   gnuplot -e "dir='runs/associative_recall/latest'; fmt='pdf'; out='fig.pdf'" plots/associative_recall.gp
if (!exists('dir')) dir = 'runs/associative_recall/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/associative_recall.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
NS = words(settings)
NM = words(mixers)
eval term_cmd(fmt, FULL, 2.4)
set output out
file = dir . '/best.tsv'
setting_title(s) = sprintf('T = %s, D = %s', word(settings, s)[1:strstrt(word(settings, s), 'x') - 1], \
                           word(settings, s)[strstrt(word(settings, s), 'x') + 1:])
set multiplot layout 1, NS + 1 margins 0.06, 0.99, 0.30, 0.90 spacing 0.045, 0
set key noenhanced
set yrange [0:1.05]
set ytics 0, 0.25, 1
set logscale x 2
set xlabel 'd_{model}' offset 0, 0.6
do for [s = 1:NS] {
  set title sprintf('(%c) %s', 96 + s, setting_title(s)) offset 0, -0.6
  set ylabel (s == 1 ? 'accuracy' : '') offset 1.5, 0
  set format y (s == 1 ? '%g' : '')
  unset key
  if (s == 1) {
    set key at screen 0.5, screen 0.06 center horizontal maxrows 1 samplen 2 font ',8'
  }
  plot for [m = 1:NM] file index (s - 1) * NM + m - 1 using 1:2 with linespoints lt m title word(mixers, m)
}
unset key
set logscale x 10
set format x LOG10
set format y ''
set xlabel 'training time (s)' offset 0, 0.6
set ylabel ''
set title sprintf('(%c) %s: accuracy vs time', 96 + NS + 1, setting_title(time_setting)) offset 0, -0.6
plot for [m = 1:NM] file index (time_setting - 1) * NM + m - 1 using 5:2 with linespoints lt m notitle
unset multiplot
unset output
