# The four benchmark panels of scripts/bench-all.sh in one PNG.
# gnuplot -e "dir='build/results'" scripts/plot-bench-all.gp
# Reads dir/{mpi-bandwidth,regsweep,hitpath,kernel}.dat; writes dir/bench-all.png.
if (!exists("dir")) dir = 'build/results'
set terminal pngcairo size 1400,1000 noenhanced font ",10"
set output dir.'/bench-all.png'
set multiplot layout 2,2 title "ummunot benchmarks (QEMU TCG VM with Soft-RoCE; hit path also on the host)"
set grid
set key top left

set title "MPI ping-pong bandwidth (Open MPI + UCX rc_verbs on rxe0)"
set logscale x 2
set format x "%.0b%B"
set xlabel "message size (bytes)"
set ylabel "MB/s (size / median one-way time)"
plot dir.'/mpi-bandwidth.dat' using 1:2 with linespoints lw 2 pt 7 title "(a) UCX cache off", \
     '' using 1:3 with linespoints lw 2 pt 5 title "(b) UCX cache off + shim", \
     '' using 1:4 with linespoints lw 2 pt 9 dt 2 title "(c) UCX rcache"

set title "ibv_reg_mr + ibv_dereg_mr on rxe0: uncached vs cache hit"
set logscale y 10
set format y "%g"
set ylabel "pairs per second (1 / median pair time)"
set key top right
plot dir.'/regsweep.dat' using 1:2 with linespoints lw 2 pt 7 title "uncached (no shim)", \
     '' using 1:3 with linespoints lw 2 pt 5 title "cache hit (shim)"

set title "Shim hit path (median ns per reg+dereg pair per thread; test double = libibverbs stand-in)"
unset logscale x
unset logscale y
set format x "%g"
set xlabel ""
set ylabel "ns per pair per thread"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set yrange [0:*]
set key top left
plot dir.'/hitpath.dat' using 2:xtic(1) title "test double alone (no shim)", \
     '' using 3 title "libummushim.so cache hit"

set title "Module: munmap of an unrelated page vs registrations on one fd"
set style data linespoints
set yrange [*:*]
set logscale x 10
set format x "10^{%L}"
set format x "%.0e"
set xlabel "registrations (0 plotted at 1)"
set ylabel "median ns"
plot dir.'/kernel.dat' using 1:2 with linespoints lw 2 pt 7 title "munmap (unrelated range)", \
     '' using 1:3 with linespoints lw 2 pt 5 title "REGISTER + UNREGISTER"
unset multiplot
