# dense_to_sparse.gp: the figure of experiments/dense_to_sparse.lua (EvoMoE, papers.md §10):
# (a) active experts per token against the training step (mean over seeds), one line per arm;
# (b) validation loss against the step (mean +- standard error over seeds); (c) the same against
# the training CPU time (one thread: robust to other load on the machine). The dotted line in (b) and (c): top-1's final validation loss.
#   gnuplot -e "dir='runs/dense_to_sparse/latest'; fmt='pdf'; out='fig.pdf'" plots/dense_to_sparse.gp
if (!exists('dir')) dir = 'runs/dense_to_sparse/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/dense_to_sparse.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
eval term_cmd(fmt, FULL, 2.3)
set output out
ARMS = 'dts dts_evo top1 top2'
TITLES = sprintf('"DTS {/Symbol t} %g{/Symbol \256}%g" "DTS + diversify" top-1 top-2', tau0, tau1)
file = dir . '/steps.tsv'

set multiplot layout 1,3 margins 0.07,0.99,0.2,0.88 spacing 0.075,0

set title '(a) active experts per token' offset 0,-0.6
set xlabel 'training step' offset 0,0.6
set xtics 500
set ylabel 'experts per token' offset 1.5,0
set yrange [0:*]
set key top right samplen 1.5 spacing 0.9 font ',7'
plot for [a = 1:4] file index a - 1 using 1:3 with lines lt a title word(TITLES, a)

set title '(b) validation loss vs step' offset 0,-0.6
set ylabel 'loss (nats per char)' offset 1.5,0
set autoscale y
set datafile missing NaN
plot for [a = 1:4] file index a - 1 using 1:($4 - $5):($4 + $5) with filledcurves lt a notitle, \
     for [a = 1:4] file index a - 1 using 1:4 with linespoints lt a pt 7 ps 0.3 title word(TITLES, a), \
     target with lines lt 8 dt 3 lw 0.8 title 'top-1 final'

set title '(c) validation loss vs training time' offset 0,-0.6
set xlabel 'training CPU time (s, one thread)' offset 0,0.6
set xtics 50
set autoscale xfix
set ylabel ''
plot for [a = 1:4] file index a - 1 using 2:4 with linespoints lt a pt 7 ps 0.3 title word(TITLES, a), \
     target with lines lt 8 dt 3 lw 0.8 notitle
unset multiplot
