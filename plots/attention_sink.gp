# attention_sink.gp: the figure of experiments/attention_sink.lua (Qiu et al. 2025, papers.md §9.3):
# (a) grammar study: attention mass on key 0 per layer and head at the base learning rate (seeds
# as points, one colour per arm), the dashed line uniform causal attention; (b) bigram-backcopy
# study (one layer, one head): attention mass on key 0 during training (mean +- standard error
# over seeds), dashed: uniform; (c) histogram of the gate scores of the gated arms (grammar study);
# (d) grammar study: final validation loss against the peak learning rate (seeds as points, mean
# +- standard error of the runs that did not diverge; the key counts diverged runs).
#   gnuplot -e "dir='runs/attention_sink/latest'; fmt='pdf'; out='fig.pdf'" plots/attention_sink.gp
if (!exists('dir')) dir = 'runs/attention_sink/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/attention_sink.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
eval term_cmd(fmt, FULL, 2.4)
set output out
ARMS = 'baseline headwise elementwise'
NH = heads * layers

set multiplot layout 1,4 margins 0.06,0.995,0.2,0.88 spacing 0.06,0

set title sprintf('(a) grammar, lr %s', base_lr) offset 0,-0.6
set xlabel 'layer.head' offset 0,0.6
set ylabel 'attention mass on key 0' offset 1.5,0
set logscale y
set xrange [-0.6:NH - 0.4]
set xtics 1 font ',7'
set for [i = 0:NH - 1] xtics add (sprintf('%d.%d', i / heads + 1, i % heads + 1) i)
set key bottom right samplen 1 spacing 0.9 font ',7'
plot for [a = 1:3] dir . '/sink.tsv' index a - 1 using 1:2 with points lt a pt 7 ps 0.5 title word(ARMS, a), \
     dir . '/sink.tsv' index 0 using 1:3 with lines lt 8 dt 2 lw 0.8 title 'uniform'
unset logscale y
set xtics autofreq font ',8'
unset xrange

set title sprintf('(b) bigram-backcopy, lr %s', bb_lr) offset 0,-0.6
set xlabel 'training step' offset 0,0.6
set ylabel ''
set key top right
plot for [a = 1:3] dir . '/bb.tsv' index a - 1 using 1:($2 - $3):($2 + $3) with filledcurves lt a notitle, \
     for [a = 1:3] dir . '/bb.tsv' index a - 1 using 1:2 with linespoints lt a pt 7 ps 0.3 title word(ARMS, a), \
     dir . '/bb.tsv' index 0 using 1:4 with lines lt 8 dt 2 lw 0.8 title 'uniform'

set title '(c) grammar: gate scores' offset 0,-0.6
set xlabel 'sigmoid gate score' offset 0,0.6
set ylabel 'fraction' offset 1.5,0
set xrange [0:1]
plot for [a = 2:3] dir . '/hist.tsv' index a - 1 using 1:2 with linespoints lt a title word(ARMS, a)
unset xrange

set title '(d) grammar: stability' offset 0,-0.6
set xlabel 'peak learning rate' offset 0,0.6
set ylabel 'validation loss (nats/char)' offset 1.5,0
set logscale x
set format x LOG10
set key top left
set autoscale xfix
set offsets graph 0.1, graph 0.1, graph 0.3, graph 0.1
plot for [a = 1:3] dir . '/lr.tsv' index a - 1 using ($1 * (1 + 0.06 * (a - 2))):3:4 with yerrorlines lt a \
       title sprintf('%s (%s diverged)', word(ARMS, a), word(diverged, a)), \
     for [a = 1:3] dir . '/lr.tsv' index a - 1 using ($1 * (1 + 0.06 * (a - 2))):2 with points lt a pt 6 ps 0.4 notitle
unset multiplot
