# fit_slope.gp: least-squares line in log-log space, for slopes printed in a key. Set FIT_FILE,
# FIT_INDEX (gnuplot data set), FIT_X and FIT_Y (columns), then `load 'plots/fit_slope.gp'`:
# fits log10(y) = FIT_A + FIT_B log10(x) (rows with y <= 0 or NaN are skipped) and sets FIT_A,
# FIT_B, FIT_B_ERR and FIT_KEY ("slope -0.49 ± 0.03"). Draw the line as 10**FIT_A * x**FIT_B.
FIT_A = 0.5
FIT_B = -0.5
fit_line(x) = FIT_A + FIT_B * x
fit fit_line(x) FIT_FILE index FIT_INDEX using (log10(column(FIT_X))):(column(FIT_Y) > 0 ? log10(column(FIT_Y)) : NaN) via FIT_A, FIT_B
FIT_B_ERR = FIT_B_err
FIT_KEY = sprintf('slope %.2f {/Symbol \261} %.2f', FIT_B, FIT_B_ERR)
