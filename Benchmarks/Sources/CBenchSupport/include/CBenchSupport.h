// What the benchmark helpers need from libc that Swift does not import.
#ifndef C_BENCH_SUPPORT_H
#define C_BENCH_SUPPORT_H

/// Pins the calling thread to `cpu` (cpu < 0: every CPU). Returns 0 or -errno.
int bench_pin_thread(int cpu);

#endif
