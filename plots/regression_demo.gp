# regression_demo.gp: the walking skeleton's figure, from a run folder written by
# experiments/regression_demo.lua: (a) training loss on a log scale, (b) noisy data, the target
# function and the MLP's prediction. Usage: gnuplot -e "dir='runs/regression_demo/latest'" \
#   plots/regression_demo.gp  ->  dir/regression_demo.{png,pdf}; `gmoe plot regression_demo`
# passes fmt (pdf, png or svg) and out to render one format at a time.
if (!exists('dir')) dir = 'runs/regression_demo/latest'
fmts = exists('fmt') ? fmt : 'pdf png'
here = system('dirname ' . ARG0)
stats dir . '/loss.tsv' using 1 nooutput
last_step = STATS_max

do for [f in fmts] {
  load here . '/style.gp'
  eval term_cmd(f, COL, 1.6)
  set output (exists('out') ? out : dir . '/regression_demo.' . f)
  set multiplot layout 1,2 margins 0.12,0.98,0.22,0.9 spacing 0.1,0

  set title '(a) training loss' offset 0,-0.5
  set xlabel 'step' offset 0,0.5
  set ylabel 'MSE' offset 1,0
  set logscale y
  set format y '10^{%T}'
  set xtics last_step / 2
  set ytics autofreq
  unset key
  plot dir . '/loss.tsv' using 1:2 with lines lt 1

  set title '(b) fit' offset 0,-0.5
  set xlabel 'x'
  set ylabel 'y'
  unset logscale y
  set format y '%g'
  set xtics 1
  set ytics 1
  set key top left reverse Left samplen 1
  plot dir . '/data.tsv' using 1:2 with points lt 6 pt 7 ps 0.12 title 'data', \
       dir . '/pred.tsv' using 1:2 with lines lt 8 dt 2 lw 1 title 'target', \
       dir . '/pred.tsv' using 1:3 with lines lt 2 title 'MLP'
  unset multiplot
  unset output
}
