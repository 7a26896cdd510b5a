// The header's getters are inline; the one function with a body of its own lives here.
#include "CMPIShim.h"
#include <dlfcn.h>

int cmpi_cuda_aware(void) {
    int (*query)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "MPIX_Query_cuda_support");
    return query ? query() : 0;
}
