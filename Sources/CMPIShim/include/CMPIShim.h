// CMPIShim has no API of its own. OpenMPI defines its handles (MPI_COMM_WORLD, datatypes, reduction
// operations, MPI_STATUS_IGNORE …) as macros that take the address of global objects; Swift cannot import
// such macros, so each one needed becomes a `static inline` getter here.
#ifndef CMPISHIM_H
#define CMPISHIM_H
#include <mpi.h>

static inline MPI_Comm cmpi_comm_world(void) { return MPI_COMM_WORLD; }

#endif
