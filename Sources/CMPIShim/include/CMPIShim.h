// CMPIShim has no API of its own. OpenMPI defines its handles (MPI_COMM_WORLD, datatypes, reduction
// operations, MPI_STATUS_IGNORE …) as macros that take the address of global objects; Swift cannot import
// such macros, so each one needed becomes a `static inline` getter here.
//
// Plain integer macros (MPI_SUCCESS, MPI_MAX_ERROR_STRING, the MPI_THREAD_* levels) would import on their
// own, but MPI_MAX_ERROR_STRING is defined through another macro and the thread levels are an anonymous enum
// whose imported type differs between MPI implementations; getters give every constant one fixed C type.
// Only SpargeRing's raw-call file (Communication/MPI+Raw.swift) uses these.
#ifndef CMPISHIM_H
#define CMPISHIM_H
#include <mpi.h>

#define CMPI_GETTER(swiftName) __attribute__((swift_name(swiftName)))

// MARK: Device memory

// Whether the MPI library moves CUDA device memory itself: OpenMPI's MPIX_Query_cuda_support, looked up when
// called (mpi-ext.h declares it only where OpenMPI was built with its cuda extension); 0 where it is absent.
int cmpi_cuda_aware(void) CMPI_GETTER("cmpiCUDAAware()");

// MARK: Communicators and error handlers

static inline MPI_Comm cmpi_comm_world(void) CMPI_GETTER("cmpiCommWorld()");
static inline MPI_Comm cmpi_comm_world(void) { return MPI_COMM_WORLD; }

static inline MPI_Comm cmpi_comm_null(void) CMPI_GETTER("cmpiCommNull()");
static inline MPI_Comm cmpi_comm_null(void) { return MPI_COMM_NULL; }

static inline MPI_Errhandler cmpi_errors_return(void) CMPI_GETTER("cmpiErrorsReturn()");
static inline MPI_Errhandler cmpi_errors_return(void) { return MPI_ERRORS_RETURN; }

// MARK: Datatypes

static inline MPI_Datatype cmpi_byte(void) CMPI_GETTER("cmpiByte()");
static inline MPI_Datatype cmpi_byte(void) { return MPI_BYTE; }

static inline MPI_Datatype cmpi_uint8(void) CMPI_GETTER("cmpiUInt8()");
static inline MPI_Datatype cmpi_uint8(void) { return MPI_UINT8_T; }

static inline MPI_Datatype cmpi_int64(void) CMPI_GETTER("cmpiInt64()");
static inline MPI_Datatype cmpi_int64(void) { return MPI_INT64_T; }

static inline MPI_Datatype cmpi_double(void) CMPI_GETTER("cmpiDouble()");
static inline MPI_Datatype cmpi_double(void) { return MPI_DOUBLE; }

// MARK: Reduction operations

static inline MPI_Op cmpi_sum(void) CMPI_GETTER("cmpiSum()");
static inline MPI_Op cmpi_sum(void) { return MPI_SUM; }

static inline MPI_Op cmpi_max(void) CMPI_GETTER("cmpiMax()");
static inline MPI_Op cmpi_max(void) { return MPI_MAX; }

static inline MPI_Op cmpi_min(void) CMPI_GETTER("cmpiMin()");
static inline MPI_Op cmpi_min(void) { return MPI_MIN; }

static inline MPI_Op cmpi_bor(void) CMPI_GETTER("cmpiBitwiseOr()");
static inline MPI_Op cmpi_bor(void) { return MPI_BOR; }

// MARK: Special buffers, requests and statuses

/// MPI_IN_PLACE is `(void *)1`, a cast Swift cannot import.
static inline void *cmpi_in_place(void) CMPI_GETTER("cmpiInPlace()");
static inline void *cmpi_in_place(void) { return MPI_IN_PLACE; }

static inline MPI_Request cmpi_request_null(void) CMPI_GETTER("cmpiRequestNull()");
static inline MPI_Request cmpi_request_null(void) { return MPI_REQUEST_NULL; }

static inline MPI_Status *cmpi_status_ignore(void) CMPI_GETTER("cmpiStatusIgnore()");
static inline MPI_Status *cmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }

// MARK: Integer constants

static inline int cmpi_success(void) CMPI_GETTER("cmpiSuccess()");
static inline int cmpi_success(void) { return MPI_SUCCESS; }

static inline int cmpi_err_other(void) CMPI_GETTER("cmpiErrOther()");
static inline int cmpi_err_other(void) { return MPI_ERR_OTHER; }

static inline int cmpi_err_rank(void) CMPI_GETTER("cmpiErrRank()");
static inline int cmpi_err_rank(void) { return MPI_ERR_RANK; }

static inline int cmpi_err_tag(void) CMPI_GETTER("cmpiErrTag()");
static inline int cmpi_err_tag(void) { return MPI_ERR_TAG; }

static inline int cmpi_err_truncate(void) CMPI_GETTER("cmpiErrTruncate()");
static inline int cmpi_err_truncate(void) { return MPI_ERR_TRUNCATE; }

static inline int cmpi_max_error_string(void) CMPI_GETTER("cmpiMaxErrorString()");
static inline int cmpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }

static inline int cmpi_thread_single(void) CMPI_GETTER("cmpiThreadSingle()");
static inline int cmpi_thread_single(void) { return MPI_THREAD_SINGLE; }

static inline int cmpi_thread_funneled(void) CMPI_GETTER("cmpiThreadFunneled()");
static inline int cmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }

static inline int cmpi_thread_serialized(void) CMPI_GETTER("cmpiThreadSerialized()");
static inline int cmpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }

static inline int cmpi_thread_multiple(void) CMPI_GETTER("cmpiThreadMultiple()");
static inline int cmpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }

#undef CMPI_GETTER
#endif
