# style.gp: the shared look of gmoe figures. The caller sets the terminal (pngcairo or
# pdfcairo at paper column widths) and output; this file sets fonts, colours and axes.
# Line types 1-8 are the Okabe-Ito palette (distinguishable with colour-vision deficiency).
set linetype 1 lc rgb '#0072B2' lw 1.5 pt 7 ps 0.4  # blue
set linetype 2 lc rgb '#D55E00' lw 1.5 pt 5 ps 0.4  # vermillion
set linetype 3 lc rgb '#009E73' lw 1.5 pt 9 ps 0.4  # bluish green
set linetype 4 lc rgb '#CC79A7' lw 1.5 pt 11 ps 0.4 # reddish purple
set linetype 5 lc rgb '#E69F00' lw 1.5 pt 13 ps 0.4 # orange
set linetype 6 lc rgb '#56B4E9' lw 1.5 pt 3 ps 0.4  # sky blue
set linetype 7 lc rgb '#F0E442' lw 1.5 pt 1 ps 0.4  # yellow
set linetype 8 lc rgb '#000000' lw 1.5 pt 2 ps 0.4  # black
set linetype cycle 8

set termoption font 'Helvetica,9'
set grid xtics ytics lw 0.5 lc rgb '#dddddd'
set border 3 lw 0.8
set tics nomirror out scale 0.5
set key top right noopaque samplen 2 spacing 1.0 font ',8'
set datafile commentschars '#'
set datafile separator '\t'
