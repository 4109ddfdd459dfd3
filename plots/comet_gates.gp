# comet_gates.gp: the COMET reproduction's figure from a run of experiments/comet_gates.lua:
# (a) test loss (mean over the two tasks) per arm, every seed a point, mean +- standard error as a
# bar beside them, one colour per data setting; (b) gate sparsity (mean number of non-zero gate
# weights per example) against epoch for DSelect-k and COMET, solid for the first data setting and
# dashed for the second, bands +- standard error over seeds; (c) support recovery per arm, as (a).
# Usage (gmoe plot comet_gates does this per format):
#   gnuplot -e "dir='runs/comet_gates/latest'; fmt='pdf'; out='fig.pdf'" plots/comet_gates.gp
if (!exists('dir')) dir = 'runs/comet_gates/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/comet_gates.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
eval term_cmd(fmt, FULL, 2.6)
set output out
ND = words(data)
NA = words(arms)
NS = words(sparsity_sets)
pts = dir . '/points.tsv'
arm = dir . '/arms.tsv'
sp = dir . '/sparsity.tsv'
off(d) = ND > 1 ? (d - 1.5) * 0.36 : 0
jit(s) = (s - 5.5) * 0.012

set multiplot layout 1,3 margins 0.07,0.99,0.27,0.90 spacing 0.07,0
set xrange [0.4:NA + 0.6]
set xtics () rotate by 40 right font ',7' nomirror noenhanced
do for [i = 1:NA] { set xtics add (word(arms, i) i) }
set grid noxtics ytics

set title '(a) test loss per seed, mean {/Symbol \261} s.e.' offset 0,-0.6
set ylabel 'test loss (mean of the 2 tasks)' offset 1.5,0
set logscale y
set key top right font ',7' samplen 1 noenhanced
plot for [d = 1:ND] pts index d - 1 using ($1 + off(d) + jit($2)):3 with points lt d pt 7 ps 0.25 notitle, \
     for [d = 1:ND] arm index d - 1 using ($1 + off(d) + 0.13):4:5 with yerrorbars lt d pt 5 ps 0.45 lw 1.2 title word(data, d)
unset logscale y

set title '(b) gate sparsity' offset 0,-0.6
set ylabel 'non-zero gate weights per example' offset 1.5,0
set xrange [*:*]
set xtics auto norotate font ',8'
set xlabel 'epoch' offset 0,0.6
set logscale y 2
set yrange [1:20]
set ytics (1, 2, 4, 8, 16)
set grid xtics ytics
set key top right
set_data(s) = word(sparsity_sets, s)[1:strstrt(word(sparsity_sets, s), ':') - 1]
set_arm(s) = word(sparsity_sets, s)[strstrt(word(sparsity_sets, s), ':') + 1:]
lt_arm(a) = a eq 'dselect_k' ? 3 : a eq 'comet' ? 4 : 5
dt_data(s) = set_data(s) eq word(data, 1) ? 1 : 2
plot for [s = 1:NS] sp index s - 1 using 1:($2 - $3):($2 + $3) with filledcurves lt lt_arm(set_arm(s)) notitle, \
     for [s = 1:NS] sp index s - 1 using 1:2 with lines lt lt_arm(set_arm(s)) dt dt_data(s) title set_data(s) . ' ' . set_arm(s)
unset logscale y
unset xlabel
set yrange [*:*]
set ytics auto

set title '(c) support recovery' offset 0,-0.6
set ylabel 'fraction of test examples' offset 1.5,0
set xrange [0.4:NA + 0.6]
set yrange [-0.02:1.02]
set key top right
set xtics () rotate by 40 right font ',7'
do for [i = 1:NA] { set xtics add (word(arms, i) i) }
set grid noxtics ytics
plot for [d = 1:ND] pts index d - 1 using ($1 + off(d) + jit($2)):4 with points lt d pt 7 ps 0.25 notitle, \
     for [d = 1:ND] arm index d - 1 using ($1 + off(d) + 0.13):6:7 with yerrorbars lt d pt 5 ps 0.45 lw 1.2 title word(data, d)
unset multiplot
unset output
