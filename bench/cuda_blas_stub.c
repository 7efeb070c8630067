/* Stand-in for OpenBLAS and LAPACKE on the GPU machine, whose image has neither (bench/cuda_device.sh
 * builds it as libopenblas.so.0 and liblapacke.so.3). atp links them for the CPU path; the GPU path
 * never calls them. Every entry that would compute aborts loudly, so no CPU-path call passes silently. */
#include <stdio.h>
#include <stdlib.h>

static void die(const char* f) {
  fprintf(stderr, "cuda_blas_stub: %s called, but this device run carries no BLAS/LAPACK\n", f);
  abort();
}
void cblas_sgemm(void) { die("cblas_sgemm"); }
int LAPACKE_sgesdd(void) { die("LAPACKE_sgesdd"); return -1; }
int LAPACKE_ssyevd(void) { die("LAPACKE_ssyevd"); return -1; }
/* Thread-count bookkeeping only: harmless as no-ops. */
int openblas_get_num_threads(void) { return 1; }
void openblas_set_num_threads(int n) { (void)n; }
