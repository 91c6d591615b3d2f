// OpenBLAS's C interface, as Debian's libopenblas-dev installs it.
#include <cblas.h>

// Declared by OpenBLAS's cblas.h; repeated so the module builds against
// any cblas.h the system's alternatives select.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
