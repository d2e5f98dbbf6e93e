# One MPI stack of the main job on the virtual cluster: per workload and
# configuration, MB/s (left) and real registrations per rank (right).
# gnuplot -e "datafile='cluster-STACK.dat'; outfile='...png'; ncfg=N; stack='...'" plot-cluster.gp
# (datafile: the workload, then N MB/s columns, then N registration columns)
set terminal pngcairo size 1400,520 font ",10"
set output outfile
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key below noenhanced
set xtics noenhanced
set grid ytics
set logscale y
set multiplot layout 1,2 title "Main job on the virtual cluster, ".stack.": (a) cache off, (b) shim, (c) MPI's own cache" noenhanced
set ylabel "MB/s (bytes checked / slowest rank's time in MPI, log)" noenhanced
plot for [i=2:ncfg+1] datafile using i:xtic(1) title columnheader(i)
set ylabel "real ibv_reg_mr calls per rank (mean, log)" noenhanced
plot for [i=ncfg+2:2*ncfg+1] datafile using i:xtic(1) title columnheader(i-ncfg)
unset multiplot
