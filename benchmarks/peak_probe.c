/* Measures this core's INT8 VNNI and FP32 FMA peaks (16 independent zmm chains each).
 *   gcc -O2 -mavx512f -mavx512bw -mavx512vnni benchmarks/peak_probe.c -o /tmp/peak && /tmp/peak
 * Every accumulator feeds the printed result, so the compiler cannot drop any of them. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

#define REP16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

int main(void) {
  const long iters = 50000000;
#define DI(i) __m512i c##i = _mm512_set1_epi32(i);
#define UI(i) c##i = _mm512_dpbusd_epi32(c##i, a, b);
#define SI(i) s = _mm512_add_epi32(s, c##i);
  REP16(DI)
  __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x02020202);
  double t = now();
  for (long it = 0; it < iters; it++) {
    REP16(UI)
    __asm__ volatile("" : "+v"(a));
  }
  double dt = now() - t;
  __m512i s = _mm512_setzero_si512();
  REP16(SI)
  printf("int8 vnni: %.0f GOP/s per core (%d)\n", iters * 16 * 128.0 / dt / 1e9,
         _mm512_reduce_add_epi32(s));
#define DF(i) __m512 f##i = _mm512_set1_ps((float)i);
#define UF(i) f##i = _mm512_fmadd_ps(f##i, x, y);
#define SF(i) g = _mm512_add_ps(g, f##i);
  REP16(DF)
  __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(0.001f);
  t = now();
  for (long it = 0; it < iters; it++) {
    REP16(UF)
    __asm__ volatile("" : "+v"(x));
  }
  dt = now() - t;
  __m512 g = _mm512_setzero_ps();
  REP16(SF)
  printf("fp32 fma:  %.0f GFLOP/s per core (%f)\n", iters * 16 * 32.0 / dt / 1e9,
         _mm512_reduce_add_ps(g));
  return 0;
}
