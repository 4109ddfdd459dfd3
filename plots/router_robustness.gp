# router_robustness.gp: Reproduction 3's figure from a run of experiments/router_robustness.lua:
# (a) clean (SA) and PGD robust (RA) accuracy per arm: one small point per seed, mean +- standard
# error as the larger point with bars; (b) routing flip rate per MoE arm between x and its PGD
# input (filled) and under the router-only attack (open: 1 - router accuracy); (c) the share of
# test images routed to expert 0 after each epoch, one line per seed, for the two MoE arms that
# train their router (a share near 0 or 1 is a collapsed router).
#   gnuplot -e "dir='runs/router_robustness/latest'; fmt='pdf'; out='fig.pdf'" plots/router_robustness.gp
if (!exists('dir')) dir = 'runs/router_robustness/latest'
if (!exists('fmt')) fmt = 'pdf'
if (!exists('out')) out = dir . '/router_robustness.' . fmt
here = system('dirname ' . ARG0)
load here . '/style.gp'
load dir . '/layout.gp'
eval term_cmd(fmt, FULL, 2.4)
set output out
NA = words(arms)
res = dir . '/results.tsv'
smy = dir . '/summary.tsv'
cur = dir . '/curves.tsv'
idx(s) = (sum [i = 1:NA] (word(arms, i) eq s ? i : 0)) - 1
label(s) = s eq 'dense_at' ? 'dense AT' : s eq 'moe_joint_at' ? 'MoE joint AT' : s eq 'advmoe' ? 'AdvMoE' : \
           s eq 'moe_router_frozen' ? 'frozen router' : s
jit(seed) = 0.04 * ((int(seed) % 3) - 1)

set multiplot layout 1,3 margins 0.06,0.99,0.25,0.9 spacing 0.07,0
set xrange [-0.6:NA - 0.4]
set xtics () rotate by 25 right nomirror font ',7'
set for [i = 1:NA] xtics add (label(word(arms, i)) i - 1)
set key top right font ',7' samplen 1 spacing 0.9

set title '(a) accuracy: SA and RA (PGD-10)' offset 0,-0.6
set ylabel 'accuracy' offset 1.5,0
set yrange [0:1]
plot res using (idx(strcol(1)) - 0.15 + jit($2)):4 with points lt 1 pt 7 ps 0.25 notitle, \
     res using (idx(strcol(1)) + 0.15 + jit($2)):5 with points lt 2 pt 5 ps 0.25 notitle, \
     smy using ($2 - 0.15):4:5 with yerrorbars lt 1 pt 7 ps 0.7 title 'SA', \
     smy using ($2 + 0.15):6:7 with yerrorbars lt 2 pt 5 ps 0.7 title 'RA'

set title '(b) routing flip rate' offset 0,-0.6
set ylabel 'share of test inputs' offset 1.5,0
set yrange [0:1]
plot res using (idx(strcol(1)) - 0.12 + jit($2)):8 with points lt 3 pt 7 ps 0.25 notitle, \
     res using (idx(strcol(1)) + 0.12 + jit($2)):(1 - $7) with points lt 4 pt 6 ps 0.25 notitle, \
     smy using ($2 - 0.12):12:13 with yerrorbars lt 3 pt 7 ps 0.7 title 'PGD on the model', \
     smy using ($2 + 0.12):(1 - $10):11 with yerrorbars lt 4 pt 6 ps 0.7 title 'PGD on the router'

set title '(c) share routed to expert 0' offset 0,-0.6
set ylabel '' 
set xtics norotate autofreq font ',8'
set xrange [0.5:epochs + 0.5]
set xlabel 'epoch' offset 0,0.6
set yrange [-0.02:1.25]   # headroom for the key: collapsed routers sit at 0 and 1
set ytics 0, 0.2, 1
sel(a, s) = (strcol(1) eq a && $2 == s) ? $7 : NaN
plot NaN with linespoints lt 2 lw 0.8 ps 0.3 title 'MoE joint AT', \
     NaN with linespoints lt 3 lw 0.8 ps 0.3 title 'AdvMoE', \
     for [s = seed0:seed0 + nseeds - 1] cur using 3:(sel('moe_joint_at', s)) with linespoints lt 2 lw 0.8 ps 0.3 notitle, \
     for [s = seed0:seed0 + nseeds - 1] cur using 3:(sel('advmoe', s)) with linespoints lt 3 lw 0.8 ps 0.3 notitle
unset multiplot
unset output
