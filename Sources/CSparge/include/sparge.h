/*
 * sparge.h: the C interface of SpargeRing (libSpargeC.so, built by `bash launch/setup.sh`).
 *
 * SpargeAttn sparse attention over a sequence that may be sharded across the ranks of an MPI communicator.
 * One forward call per layer: each rank passes its own rows of Q, K and V, and gets its own rows of the
 * output (and, if asked, their log-sum-exp) back. The Python package `spargering` (python/) is written over
 * this interface with ctypes; any other language can use it the same way.
 *
 * Conventions
 * - Every fallible call returns a `sparge_status` and, when it is not SPARGE_OK, writes a NUL-terminated
 *   message (which tensor or parameter, its shape, its dtype) into `error` (at most `error_size` bytes,
 *   truncated to fit; `error` may be NULL).
 * - Nothing here exits, aborts or traps on bad input. With a communicator, `sparge_forward` is collective:
 *   a bad input on one rank returns the same error on every rank (after the ranks have compared their
 *   problems), never a hang. A failure of the MPI transport itself inside a collective cannot be recovered
 *   from by anyone; it ends the job through MPI_Abort after printing the MPI error.
 * - A context is used from one thread at a time: the thread that makes the host program's MPI calls.
 * - The library reads no environment variables.
 */
#ifndef SPARGE_H
#define SPARGE_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this interface; it changes whenever a struct or a signature below changes. */
#define SPARGE_ABI_VERSION 2

typedef enum {
    SPARGE_OK = 0,
    SPARGE_ERROR_INVALID_ARGUMENT = 1, /* a tensor, parameter or layout the call cannot work with */
    SPARGE_ERROR_UNSUPPORTED = 2,      /* valid, but not available (e.g. a head dimension the GPU kernels do not take) */
    SPARGE_ERROR_MPI = 3,              /* the communicator could not be used (MPI not running, a 0 handle) */
    SPARGE_ERROR_BACKEND = 4           /* the compute backend failed (no GPU, a driver error) */
} sparge_status;

/* Element types. */
typedef enum { SPARGE_DTYPE_F32 = 0, SPARGE_DTYPE_BF16 = 1, SPARGE_DTYPE_F16 = 2 } sparge_dtype;

/* Where a tensor's elements are; the values are DLPack's device types (kDLCPU, kDLCUDA). */
typedef enum { SPARGE_DEVICE_CPU = 1, SPARGE_DEVICE_CUDA = 2 } sparge_device;

/* Who computes the mask and the attention tiles: this process's CPU cores, or the GPU of this rank
 * (tensors stay in host memory; the backend moves them). The mask is the same bit for bit. */
typedef enum { SPARGE_ENGINE_CPU = 0, SPARGE_ENGINE_CUDA = 1 } sparge_engine;

/* What Q, K and V are rounded or quantized to before the products: the command line's --precision, one
 * definition for both engines. The CPU engine computes in every one (bf16 on AMX or AVX512-BF16 tiles where
 * the CPU has them; int8 is SageAttention's INT8 Q·Kᵀ with K smoothed by its mean, then P·V in integers:
 * P in 14-bit fixed point, V in 12 bits); the CUDA engine in bf16, fp16 and int8 (INT8 Q·Kᵀ, P·V in fp16).
 * DEFAULT (0, so that a zero-filled sparge_params asks for it): fp32 on the CPU, bf16 on CUDA. */
typedef enum {
    SPARGE_PRECISION_DEFAULT = 0,
    SPARGE_PRECISION_FP32 = 1,
    SPARGE_PRECISION_BF16 = 2,
    SPARGE_PRECISION_FP16 = 3,
    SPARGE_PRECISION_INT8 = 4
} sparge_precision;

/* How key blocks are chosen per query block (DESIGN.md §1, step 5). */
typedef enum { SPARGE_SELECT_CDF = 0, SPARGE_SELECT_TOPK = 1, SPARGE_SELECT_DENSE = 2 } sparge_selection;

/* A strided view of a caller's memory, borrowed for the call (nothing is copied unless a conversion is
 * needed, and nothing is kept after the call returns).
 * shape: [B, H, N, D]: batch, heads, this rank's rows, head dimension. An [B, N, H, D] array is passed as
 * the view with its axes 1 and 2 swapped (swap shape[1]/shape[2] and strides[1]/strides[2]), not a copy.
 * strides: in elements, non-negative. device_id: the device ordinal (0 for the CPU). */
typedef struct {
    void *data;
    int64_t shape[4];
    int64_t strides[4];
    int32_t dtype;       /* sparge_dtype */
    int32_t device_type; /* sparge_device */
    int32_t device_id;
    int32_t reserved;    /* 0 */
} sparge_tensor;

/* SpargeAttn's parameters, with upstream SpargeAttn's names in the comments. Every rank passes the same. */
typedef struct {
    int32_t selection;     /* sparge_selection */
    float cdf_threshold;   /* cdfthreshd, τ in (0, 1] (SPARGE_SELECT_CDF); upstream default 0.98 */
    float topk;            /* topk, fraction in (0, 1] (SPARGE_SELECT_TOPK) */
    float sim_threshold;   /* simthreshd1, θ (default 0.6) */
    float pv_threshold;    /* pvthreshd, λ in log2 units (default 50 = off) */
    float scale;           /* softmax scale; 0 means 1/sqrt(D) */
    int32_t causal;        /* is_causal: token-level causal attention, zigzag shards */
    int32_t sink;          /* attention_sink: key block 0 always computed */
    int32_t block_q;       /* query rows per mask block; 0 means 128 */
    int32_t block_k;       /* key rows per mask block; 0 means 64 */
    int32_t kv_dtype;      /* sparge_dtype K/V blocks are stored and sent in; -1: the command line's default,
                              on the CPU engine the type the precision rounds to (bf16 for bf16, f16 for
                              fp16, else f32), on CUDA bf16 */
    int32_t keep_mask;     /* nonzero: keep the mask rows for sparge_context_mask */
    int32_t precision;     /* sparge_precision of the products (SPARGE_PRECISION_DEFAULT: the engine's) */
} sparge_params;

/* What one forward call did, over every batch item; the mask counts are run-wide, the rest this rank's. */
typedef struct {
    int64_t computed_blocks; /* mask blocks computed (all ranks) */
    int64_t block_area;      /* all blocks (the block-causal area when causal) */
    double density;          /* computed_blocks / block_area; sparsity = 1 - density */
    int64_t bytes_sent;      /* ring bytes this rank sent */
    int64_t dense_ring_bytes;/* what a ring that sends every block would have sent from this rank */
    int64_t skipped_pv_blocks; /* P·V blocks the λ rule skipped on this rank */
    int64_t seq_len;         /* N: the whole sequence, the rows of every rank together */
    double summary_seconds, mask_seconds, ring_seconds, total_seconds;
} sparge_statistics;

typedef struct sparge_context sparge_context;

/* SPARGE_ABI_VERSION of the library; compare it with the header's before any other call. */
int32_t sparge_abi_version(void);

/* Creates a context.
 * mpi_comm: 0 for one process (no MPI is touched), or the caller's MPI_Comm as an integer (mpi4py:
 *   `MPI._handleof(comm)`; with Open MPI, the handle's address). The library duplicates it and neither
 *   initializes nor finalizes MPI; MPI must be running until sparge_context_destroy. Collective over it.
 * threads: worker threads for the CPU engine (≥ 1).
 * engine, device: sparge_engine and, for SPARGE_ENGINE_CUDA, the GPU ordinal (≥ 0; a node's ranks usually
 *   pass their node-local rank modulo the GPUs there).
 * flags: SPARGE_CONTEXT_TRACE or 0.
 * A context keeps, from one forward call to the next, what calls of one shape can reuse: the CPU engine's
 * fp32 copies of this rank's Q and K (4·Hq·rows·D and 4·Hkv·rows·D bytes, their pages faulted in once) and
 * an engine per precision asked for; sparge_context_destroy frees them. */
sparge_status sparge_context_create(uint64_t mpi_comm, int32_t threads, int32_t engine, int32_t device,
                                    int32_t flags, sparge_context **context, char *error, size_t error_size);

/* sparge_context_create's flags: the CUDA engine writes its host phases and copies to stderr (as the
 * command line's SPARGE_CUDA_TRACE=1 does), which shows what crosses between host and device. */
#define SPARGE_CONTEXT_TRACE 1

/* Frees the context and its duplicate communicator (collective when it has one). NULL is ignored. */
void sparge_context_destroy(sparge_context *context);

/* This process's rank and the number of ranks of the context's communicator (0 and 1 without one). */
int32_t sparge_context_rank(const sparge_context *context);
int32_t sparge_context_size(const sparge_context *context);

/* The forward pass of this rank's shard; collective over the context's communicator.
 * q: [B, Hq, rows, D]; k, v: [B, Hkv, rows, D], Hq a multiple of Hkv (GQA). rows are this rank's tokens,
 *   in the order sparge_shard_ranges gives (the whole sequence on one process). The global N is the sum of
 *   every rank's rows. In host memory, or in the memory of the context's GPU with SPARGE_ENGINE_CUDA (read
 *   in place there: no host copy of Q, K, V).
 * out: [B, Hq, rows, D], any dtype and strides, written with this rank's output (converted from fp32): in
 *   host memory, or with SPARGE_ENGINE_CUDA in the memory of the context's GPU (written there: the output
 *   never crosses to the host).
 * lse: NULL, or B·Hq·rows floats, written row-major [B, Hq, rows] with the natural-log log-sum-exp of the
 *   scaled scores (-inf for a row that saw no key).
 * statistics: NULL, or written.
 * caller_problem: NULL, or a message saying that this rank's caller could not prepare its inputs; the call
 *   then fails on every rank with it (pass NULL tensors), so that no rank is left waiting in a collective. */
sparge_status sparge_forward(sparge_context *context, const sparge_params *params, const sparge_tensor *q,
                             const sparge_tensor *k, const sparge_tensor *v, const sparge_tensor *out,
                             float *lse, sparge_statistics *statistics, const char *caller_problem,
                             char *error, size_t error_size);

/* The mask rows of the last sparge_forward with params->keep_mask set: query_blocks (this rank's query
 * blocks, ascending) and key_blocks (all of them) are written; then, when mask is not NULL, B·Hq·
 * query_blocks·key_blocks bytes [B, Hq, query_blocks, key_blocks], 1 = computed. Call it with mask NULL
 * first to learn the size; mask_size is the bytes available at mask. */
sparge_status sparge_context_mask(const sparge_context *context, int64_t *batch, int64_t *query_heads,
                                  int64_t *query_blocks, int64_t *key_blocks, uint8_t *mask, size_t mask_size,
                                  char *error, size_t error_size);

/* The token ranges [start, end) of `rank` among `ranks` for a sequence of seq_len tokens with the block
 * sizes and causality of params (zigzag when causal and ranks > 1): at most two ranges, ascending, empty
 * ones left out. ranges holds 2·capacity int64_t; *count is set to the number written. */
sparge_status sparge_shard_ranges(int64_t seq_len, int32_t ranks, int32_t rank, const sparge_params *params,
                                  int64_t *ranges, int32_t capacity, int32_t *count,
                                  char *error, size_t error_size);

#ifdef __cplusplus
}
#endif
#endif /* SPARGE_H */
