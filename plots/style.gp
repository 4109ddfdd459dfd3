# style.gp: the shared look of gmoe figures (load it first, then set the terminal):
# - widths: COL = 3.25 in (one column of a two-column paper), FULL = 6.75 in (full width);
#   `eval term_cmd(fmt, COL, 2.0)` sets pdfcairo, pngcairo (200 dpi) or svg at that size, 8-9 pt;
# - line types 1-8: the Okabe-Ito palette, each with its own dash and point type so grey prints
#   still separate them; bands: `with filledcurves` draws mean +- spread at 20 % opacity;
# - log axes: `set format x LOG10` prints powers of ten;
COL = 3.25
FULL = 6.75
term_cmd(f, w, h) = f eq 'pdf' ? sprintf("set terminal pdfcairo enhanced size %.3fin,%.3fin font 'Helvetica,9' linewidth 1", w, h) : \
                    f eq 'png' ? sprintf("set terminal pngcairo enhanced size %d,%d fontscale 1.5 linewidth 2 font 'Helvetica,9'", int(w * 200), int(h * 200)) : \
                    sprintf("set terminal svg enhanced size %d,%d font 'Helvetica,12' linewidth 1.3 background rgb 'white'", int(w * 96), int(h * 96))
LOG10 = '10^{%L}'

set linetype 1 lc rgb '#0072B2' lw 1.5 dt 1 pt 7 ps 0.4  # blue
set linetype 2 lc rgb '#D55E00' lw 1.5 dt 1 pt 5 ps 0.4  # vermillion
set linetype 3 lc rgb '#009E73' lw 1.5 dt 1 pt 9 ps 0.4  # bluish green
set linetype 4 lc rgb '#CC79A7' lw 1.5 dt 1 pt 11 ps 0.4 # reddish purple
set linetype 5 lc rgb '#E69F00' lw 1.5 dt 1 pt 13 ps 0.4 # orange
set linetype 6 lc rgb '#56B4E9' lw 1.5 dt 1 pt 3 ps 0.4  # sky blue
set linetype 7 lc rgb '#F0E442' lw 1.5 dt 1 pt 1 ps 0.4  # yellow
set linetype 8 lc rgb '#000000' lw 1.5 dt 1 pt 2 ps 0.4  # black
set linetype cycle 8

set grid xtics ytics lw 0.5 lc rgb '#dddddd'
set border 3 lw 0.8
set tics nomirror out scale 0.5
set key top right noopaque samplen 2 spacing 1.0 font ',8'
set style fill transparent solid 0.2 noborder
set fit quiet nolog errorvariables
set datafile commentschars '#'
set datafile separator '\t'
set datafile missing 'NaN'
