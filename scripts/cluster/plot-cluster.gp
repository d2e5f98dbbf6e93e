# MB/s per workload and run (STACK-CONFIG) of the main job on the virtual
# cluster.  gnuplot -e "datafile='...'; outfile='...'; ncols=N" plot-cluster.gp
# (N = the number of columns of datafile: the workload and one per run)
set terminal pngcairo size 1200,600 font ",10"
set output outfile
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key outside right top noenhanced
set xtics noenhanced
set ylabel "MB/s (bytes checked / slowest rank's time in MPI)"
set title "Main job on the virtual cluster: (a) cache off, (b) shim, (c) MPI's own cache"
set grid ytics
set yrange [0:*]
plot for [i=2:ncols] datafile using i:xtic(1) title columnheader(i)
