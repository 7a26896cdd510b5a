/// The CUDA C++ of the block-sparse FlashAttention forward, compiled at run time by NVRTC.
///
/// One thread block (CTA) is one compute tile: `NWARPS × 16 × MT` query rows of one head (the λ group), which
/// visits the key blocks of one list: the blocks of its mask row that this call holds, ascending. Each warp
/// owns `16 × MT` rows; the tensor cores do `S = Q·Kᵀ` and `O += P·V` with `mma.sync.m16n8k16` (fp32 accumulate),
/// operands loaded from shared memory with `ldmatrix`. K and V tiles come in with `cp.async`, two stages deep
/// and swizzled (16-byte chunk `c` of row `r` stored at `c ^ (r & 7)`, so that `ldmatrix` is free of bank
/// conflicts). No CUDA header is included: element types are raw 16-bit words, conversions are PTX.
///
/// The online-softmax state (`m`, `l`, unnormalised `O`, in log2 units) lives in device memory between
/// launches, so a ring can launch once per step with the blocks that step brought; `sparge_finish` writes
/// `O / l` and the LSE at the end. A launch that holds every block of its tiles (one rank) is given `out` and
/// `lse` instead, and its CTAs write `O / l` and the LSE themselves (one CTA per tile, blocks or none). The λ rule and the token-level causal mask follow the CPU tile exactly:
/// see `AttentionTile.visit`.
///
/// Specialisation by `-D`: `HEAD_DIM` (64 or 128; a multiple of 64), `BLOCK_K` (keys per tile: 32, 64 or 128),
/// `NWARPS` (1…8), `MT` (16-row m-tiles per warp, 1 or 2; rows per CTA = 16·NWARPS·MT), `QK_BF16` (Q, K as bf16, else fp16), `PV_BF16` (P, V as bf16,
/// else fp16), `QK_INT8` (`CUDAPrecision.int8`: Q and K as int8 rows of D bytes with their scales, S = Q·Kᵀ
/// in int32 with `mma.m16n8k32`, whose fragments are the same bytes of the rows as `m16n8k16`'s, so the
/// loads are the same; 64-byte rows at D = 64 swizzled in pairs).
///
/// On Hopper (sm_90a) `hopperSource` is the kernel instead: a producer warpgroup brings Q, K and V with the
/// tensor copy engine (TMA, 128-byte swizzle) into a ring of `KV_STAGES` buffers guarded by mbarriers, and
/// two consumer warpgroups, one 64-row compute tile each, compute `S = Q·Kᵀ` and `O += P·V` with `wgmma`
/// (P from registers) in steps of 128 keys (one block of 128, or two list entries of 64), software-pipelined
/// (step j+1's Q·Kᵀ runs beside step j's softmax and P·V), with the same online softmax, λ rule (per block,
/// the warpgroup's tile deciding) and causal mask as the CPU. A block the λ rule skips multiplies a zero P:
/// its result is the rule's, but it saves no time here (a branch or predicate around a wgmma makes the
/// compiler serialize all of them). The two tiles of a CTA share the K/V blocks: their lists agree on the
/// shorter one's length (one mask row cut at two causal diagonals). Where their lists take as many steps the
/// two consumers take turns at issuing their wgmmas, so that one's softmax runs beside the other's products.
/// Specialised by `HEAD_DIM` (64, 128), `BLOCK_K` (64, 128), `KV_STAGES`, `QK_BF16`, `PV_BF16`, `QK_INT8`
/// (`CUDAPrecision.int8`: Q and K in int8 with their scales, D = 128), `TURNS` (1: the turns, 0: each consumer
/// issues as soon as its data is in) and `TAIL_PARTS` (the parts of split tiles, `TailSplit`).
enum AttentionKernelSource {
    static let program = "sparge_attention.cu"

    private static let common = String(decoding: PackageResources.sparge_attention_common_cu, as: UTF8.self)

    static let source = common + String(decoding: PackageResources.sparge_attention_cu, as: UTF8.self)

    /// The Hopper kernel's source and program name.
    static let hopperProgram = "sparge_attention_sm90.cu"
    static let hopperSource = common + String(decoding: PackageResources.sparge_attention_sm90_cu, as: UTF8.self)

    /// K/V buffers of the Hopper kernel: stages of a 128-key step (one 128-key block or two 64-key blocks).
    /// Two in 16 bits (128 KiB of K and V at D = 128, beside 32 KiB of Q); three in int8, whose K is half
    /// the size (144 KiB beside 16 KiB), which measured 1–2% faster on the H200 (a third 16-bit stage did not
    /// fit beside Q with room to spare, and measured no faster).
    static func hopperStages(int8: Bool) -> Int { int8 ? 3 : 2 }

    /// Dynamic shared memory of one Hopper CTA: two 64-row Q tiles, the K and V stages of 128 keys (Q and K
    /// one byte an element in int8), the mbarriers, and 1 KiB to align the base for the 128-byte swizzle
    /// (`SHARED_BYTES` of the source).
    static func hopperSharedBytes(headDim: Int, int8: Bool = false) -> Int {
        let (qk, stages) = (int8 ? 1 : 2, hopperStages(int8: int8))
        return 2 * 64 * headDim * qk + stages * 128 * headDim * (qk + 2) + 8 * (2 + 4 * stages) + 1024
    }

    /// Dynamic shared memory of one CTA: Q tile, two K and two V tiles (Q and K one byte an element in int8),
    /// and the λ reduction.
    static func sharedBytes(headDim: Int, blockK: Int, warps: Int, mTiles: Int, int8: Bool = false) -> Int {
        (warps * 16 * mTiles + 2 * blockK) * headDim * (int8 ? 1 : 2) + 2 * blockK * headDim * 2 + 2 * warps * 4
    }
}
