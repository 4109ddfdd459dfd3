# topp_routing.gp: the figure of experiments/topp_routing.lua (Huang, An et al. 2024, papers.md §11):
# (a) active experts per token against the training step (mean over layers and seeds, band +- one
# standard error over seeds), one line per arm; (b) final active experts per layer and token group
# (copy = easy lines, add = hard lines; c.ans / a.ans = the tokens that predict the copied word /
# the sum), bars = mean over seeds with standard errors; (c) final validation loss per group.
#   gnuplot -e "dir='runs/topp_routing/latest'; fmt='pdf'; out='fig.pdf'" plots/topp_routing.gp
if (!exists('dir')) dir = 'runs/topp_routing/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/topp_routing.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
eval term_cmd(fmt, FULL, 2.3)
set output out
ARMS = 'topp topp_nodyn top2 top1'
TITLES = sprintf('top-p=%g "top-p, no dyn. loss" top-2 top-1', p)

set multiplot layout 1,3 margins 0.07,0.99,0.2,0.88 spacing 0.075,0

set title '(a) active experts per token' offset 0,-0.6
set xlabel 'training step' offset 0,0.6
set xtics 500
set ylabel 'experts per token' offset 1.5,0
set yrange [0:*]
set key top right samplen 1.5 spacing 0.9 font ',7'
plot for [a = 1:4] dir . '/steps.tsv' index a - 1 using 1:($2 - $3):($2 + $3) with filledcurves lt a notitle, \
     for [a = 1:4] dir . '/steps.tsv' index a - 1 using 1:2 with lines lt a title word(TITLES, a)

set title '(b) final active experts by layer and tokens' offset 0,-0.6
set xlabel 'layer 1                    layer 2' offset 0,0.2
set xrange [-0.6:(layers * 5) - 1.4]
set xtics ('copy' 0, 'add' 1, 'c.ans' 2, 'a.ans' 3, 'copy' 5, 'add' 6, 'c.ans' 7, 'a.ans' 8) font ',6'
set boxwidth 0.18
set style fill solid 0.6 noborder
set key top right
set offsets 0, 0, graph 0.25, 0
plot for [a = 1:2] dir . '/bars.tsv' index a - 1 using 1:2:3 with boxerrorbars lt a title word(TITLES, a), \
     2 with lines lt 3 dt 2 lw 0.8 title 'top-2'

set title '(c) validation loss by tokens' offset 0,-0.6
set xlabel ''
set xrange [-0.6:3.6]
set xtics ('copy' 0, 'add' 1, 'copy ans.' 2, 'add ans.' 3) font ',7'
set ylabel 'loss (nats per char)' offset 1.5,0
set yrange [0:*]
set offsets 0, 0, graph 0.3, 0
plot for [a = 1:4] dir . '/val_bars.tsv' index a - 1 using 1:2:3 with boxerrorbars lt a title word(TITLES, a)
unset multiplot
