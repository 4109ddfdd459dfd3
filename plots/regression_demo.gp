# regression_demo.gp: the walking skeleton's figure, from a run folder written by
# experiments/regression_demo.lua: (a) training loss on a log scale, (b) noisy data, the target
# function and the MLP's prediction. Usage: gnuplot -e "dir='runs/regression_demo/latest'" \
#   plots/regression_demo.gp  ->  dir/regression_demo.{png,pdf}
if (!exists('dir')) dir = 'runs/regression_demo/latest'
here = system('dirname ' . ARG0)
stats dir . '/loss.tsv' using 1 nooutput
last_step = STATS_max

do for [fmt in 'pdf png'] {
  if (fmt eq 'pdf') {
    set terminal pdfcairo size 3.25in,1.6in font 'Helvetica,9'
  } else {
    # 3.25in x 1.6in at 200 dpi; fonts and lines scaled to look like the PDF
    set terminal pngcairo size 650,320 fontscale 1.5 linewidth 2 font 'Helvetica,9'
  }
  set output dir . '/regression_demo.' . fmt
  load here . '/style.gp'
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
