// OpenBLAS's cblas.h also declares openblas_set_num_threads / openblas_get_corename, used to pin threads per rank
// and to report which kernel ran in benchmarks.
#include <cblas.h>
