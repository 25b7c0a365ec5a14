// Peak f32 FMA throughput of one core with AVX-512 (12 independent chains of 16-lane FMAs),
// the figure behind PEAK_GFLOPS in scripts/bench/bench-train.sh. Run one copy per core at once:
//   gcc -O2 -mavx512f scripts/bench/peak_fma.c -o /tmp/peak_fma && (/tmp/peak_fma & /tmp/peak_fma & wait)
// On the project machine (2 cores, 2026-11-24): 242.4 GFLOP/s each with both running, i.e. 64
// FLOP a cycle (two 512-bit FMA units) at about 3.8 GHz: 485 GFLOP/s for the two cores.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){
  __m512 a[12]; __m512 b=_mm512_set1_ps(0.999999f), c=_mm512_set1_ps(1e-7f);
  for(int i=0;i<12;i++) a[i]=_mm512_set1_ps(i);
  double best=0;
  for(int rep=0;rep<40;rep++){
    long n=2000000; double t=now();
    for(long k=0;k<n;k++){
      #pragma GCC unroll 12
      for(int i=0;i<12;i++) a[i]=_mm512_fmadd_ps(a[i],b,c);
    }
    double dt=now()-t; double g=n*12.0*32/dt/1e9; if(g>best)best=g;
  }
  float s=0; for(int i=0;i<12;i++) s+=_mm512_reduce_add_ps(a[i]);
  printf("best %.1f GFLOP/s one thread (%f)\n",best,s);
}
