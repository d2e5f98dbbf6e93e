# MPI ping-pong bandwidth for the main job's three configurations.
# gnuplot -e "datafile='mpi-bandwidth.dat'; outfile='mpi-bandwidth.png'" scripts/plot-mpi.gp
if (!exists("datafile")) datafile = 'mpi-bandwidth.dat'
if (!exists("outfile")) outfile = 'mpi-bandwidth.png'
set terminal pngcairo size 900,560 noenhanced font ",11"
set output outfile
set title "2-rank MPI ping-pong, Open MPI + UCX rc_verbs over Soft-RoCE (QEMU TCG VM)"
set xlabel "message size (bytes)"
set ylabel "bandwidth (MB/s = 10^6 B/s, size / median one-way time)"
set logscale x 2
set format x "%.0b%B"
set key top left
set grid
plot datafile using 1:2 with linespoints lw 2 pt 7 title "(a) UCX cache off (direct), no shim", \
     datafile using 1:3 with linespoints lw 2 pt 5 title "(b) UCX cache off + libummushim", \
     datafile using 1:4 with linespoints lw 2 pt 9 dt 2 title "(c) UCX's own registration cache"
