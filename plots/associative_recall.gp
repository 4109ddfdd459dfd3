# associative_recall.gp: the MQAR figure from a run of experiments/associative_recall.lua (zoology's
# Figure 2): one panel per setting (T, D) with validation accuracy (max over learning rates) against
# d_model on a log2 axis, one line per mixer; a last panel with the same accuracies against the
# wall-clock training time of those runs for one setting (layout.gp's time_setting): which mixer
# solves it cheapest. Dotted: 1/D, the accuracy of answering with any of the D stored values (the plateau
# before a model learns to match the query to its key). Reads best.tsv (one data set per
# setting x mixer, in layout.gp's order). Usage:
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
# Panels side by side, placed by hand so that the key can get its own full-width strip below.
NP = NS + 1
PL = 0.06; PR = 0.99; GAP = 0.045
PW = (PR - PL - (NP - 1) * GAP) / NP
panel(i) = sprintf('set lmargin at screen %g; set rmargin at screen %g; set tmargin at screen 0.90; ' . \
                   'set bmargin at screen 0.30', PL + (i - 1) * (PW + GAP), PL + (i - 1) * (PW + GAP) + PW)
set multiplot
set key noenhanced
unset key
set yrange [0:1.05]
set ytics 0, 0.25, 1
set logscale x 2
set xlabel 'd_{model}' offset 0, 0.6
do for [s = 1:NS] {
  eval panel(s)
  set title sprintf('(%c) %s', 96 + s, setting_title(s)) offset 0, -0.6
  set ylabel (s == 1 ? 'accuracy' : '') offset 1.5, 0
  set format y (s == 1 ? '%g' : '')
  D = real(word(settings, s)[strstrt(word(settings, s), 'x') + 1:])
  plot for [m = 1:NM] file index (s - 1) * NM + m - 1 using 1:2 with linespoints lt m notitle, \
       1 / D with lines lt 8 dt 3 lw 0.8 notitle
}
eval panel(NP)
set logscale x 10
set format x LOG10
set format y ''
set xlabel 'training time (s, wall clock)' offset 0, 0.6
set ylabel ''
set title sprintf('(%c) %s, vs time', 96 + NP, setting_title(time_setting)) offset 0, -0.6
plot for [m = 1:NM] file index (time_setting - 1) * NM + m - 1 using 5:2 with linespoints lt m notitle
# The key: a blank full-width plot of the same line types.
set lmargin at screen 0.02; set rmargin at screen 0.98; set tmargin at screen 0.11; set bmargin at screen 0.01
unset title; unset xlabel; unset ylabel; unset border; unset tics; unset grid; unset logscale x
set xrange [0:1]; set yrange [0:1]
set key center center horizontal samplen 2 font ',8'
plot for [m = 1:NM] NaN with linespoints lt m title word(mixers, m), \
     NaN with lines lt 8 dt 3 lw 0.8 title '1/D'
unset multiplot
unset output
