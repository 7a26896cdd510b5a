import SpargeRing

/// The SpargeAttn options shared by `run`, `bench` and `verify`.
enum ConfigOptions {
    static let specs: [OptionSpec] = [
        .flag("causal", "causal attention (zigzag sharding, token-level causal masking)"),
        .value("theta", "X", "self-similarity threshold θ (default 0.6)"),
        .value("cdf", "X", "TopCdf threshold τ in (0, 1] (default 0.98)"),
        .value("topk", "X", "TopK: keep this fraction of key blocks per row instead of TopCdf"),
        .flag("dense", "compute every block (exact FlashAttention; no mask prediction)"),
        .value("pv-threshold", "X", "λ rule in log2 units (default \(Int(SpargeConfig.lambdaOff)) = off)"),
        .flag("sink", "always compute key block 0 (attention sink)"),
        .flag("upstream-mask", "causal: upstream's exact mask rule, which may leave a query block's first rows without keys (default: its own key blocks are always computed)"),
        .flag("keep-diagonal", "causal: always compute a query block's own key blocks (the default; kept for old scripts)"),
        .value("block-q", "N", "query rows per mask block (default 128)"),
        .value("block-k", "N", "key rows per mask block (default 64)"),
        .value("tile-q", "N", "query rows per compute tile = λ group (default 64; divides --block-q)"),
        .value("scale", "X", "softmax scale (default 1/sqrt(D))"),
        .value("threads", "N", "worker threads per rank (default: cores / ranks on this node, at least 1)"),
    ]

    /// The configuration the options describe; `--cdf`, `--topk` and `--dense` exclude each other.
    static func config(_ o: ParsedOptions) throws -> SpargeConfig {
        var c = SpargeConfig()
        c.causal = o.has("causal")
        c.sink = o.has("sink")
        if o.has("upstream-mask") && o.has("keep-diagonal") {
            throw UsageError("--upstream-mask and --keep-diagonal exclude each other")
        }
        c.keepDiagonal = !o.has("upstream-mask")
        for flag in ["upstream-mask", "keep-diagonal"] where o.has(flag) && !c.causal {
            throw UsageError("--\(flag) applies to causal attention: add --causal")
        }
        if let v = try o.float("theta", range: -1...1) { c.simThreshold = v }
        let chosen = ["cdf", "topk", "dense"].filter { o.string($0) != nil || o.has($0) }
        guard chosen.count <= 1 else {
            throw UsageError("--\(chosen[0]) and --\(chosen[1]) exclude each other: give one of --cdf, --topk, --dense")
        }
        if let v = try o.float("cdf", range: Float.leastNonzeroMagnitude...1) { c.selection = .cdf(v) }
        if let v = try o.float("topk", range: Float.leastNonzeroMagnitude...1) { c.selection = .topK(v) }
        if o.has("dense") { c.selection = .dense }
        if let v = try o.float("pv-threshold", range: -1000...SpargeConfig.lambdaOff) { c.pvThreshold = v }
        if let v = try o.int("block-q", range: 16...4096) { c.blockQ = v }
        if let v = try o.int("block-k", range: 16...4096) { c.blockK = v }
        if let v = try o.int("tile-q", range: 1...4096) { c.computeTileQ = v } else { c.computeTileQ = min(64, c.blockQ) }
        guard c.blockQ % c.computeTileQ == 0 else {
            throw UsageError("--tile-q \(c.computeTileQ) must divide --block-q \(c.blockQ)")
        }
        if let v = try o.float("scale", range: Float.leastNonzeroMagnitude...1e6) { c.scale = v }
        return c
    }

    /// Worker threads: `--threads`, else this node's cores shared among the ranks on it.
    static func threads(_ o: ParsedOptions) throws -> Int {
        if let t = try o.int("threads", range: 1...1024) { return t }
        let env = ProcessInfo.processInfo.environment
        let local = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? env["SLURM_NTASKS_PER_NODE"].flatMap(Int.init) ?? 1
        return max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, local))
    }
}

import Foundation
