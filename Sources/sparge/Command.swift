import Foundation
import SpargeRing

/// What every command does around its body: `--help`, usage errors (status 2), the agreement of the ranks,
/// the communicator, and errors that end every rank with one message and status 1.
enum Command {
    static func main(name: String, usage: String, summary: String, specs: [OptionSpec], arguments: [String],
                     body: (ParsedOptions, CommandContext) throws -> Void) -> Int32 {
        let help = helpText(command: name, usage: usage, summary: summary, specs: specs)
        // An MPMD launch (`mpirun -np 1 sparge … : -np 1 sparge …`) can give ranks different commands or
        // options; any difference would make them take different collective paths and hang, so the ranks
        // compare their invocations before the first collective of the command.
        let ctx = start(Invocation(command: name, arguments: arguments, specs: specs), help: help)
        let options: ParsedOptions
        do {
            options = try ParsedOptions(arguments, specs: specs, command: name)
        } catch {
            ctx.fail("\(error)")  // unreachable: `start` ended every rank on a usage error
        }
        do {
            try body(options, ctx)
        } catch let error as UsageError {
            // Every rank parses the same arguments, so every rank is here: no collective is pending.
            ctx.agree(UsageMessage("\(error)\n(see 'sparge \(name) --help')"), status: 2)
        } catch let error as ForwardError {
            // Thrown by every rank at the same point of the forward pass: agree on the message, exit 1.
            ctx.agree(error)
        } catch {
            // This rank alone: the others may be inside a collective, so end the whole job now.
            ctx.fail("\(error)")
        }
        ctx.exit(0)
    }

    static func printError(_ message: String) {
        FileHandle.standardError.write(Data("sparge: error: \(message)\n".utf8))
    }
}

/// An output path that cannot be used.
struct OutputPathError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// The run-wide numbers of one forward pass: sums over ranks of traffic, the mask's density, the rate.
struct RunReport {
    let seqLen: Int, ranks: Int, threads: Int, heads: Int, kvHeads: Int, dim: Int, causal: Bool
    let density: Double, seconds: Double
    let bytesSent: Int, bytesReceived: Int, messages: Int, denseRingBytes: Int, summaryBytes: Int
    let computeSeconds: Double, waitSeconds: Double, hiddenShare: Double
    let summarySeconds: Double, maskSeconds: Double, ringSeconds: Double
    /// Within the ring's seconds: preparing the attention before its steps and finishing it after them.
    let setupSeconds: Double, finishSeconds: Double
    let pvSkipped: Int, blocksVisited: Int
    /// Bytes of the sparse mask rows on the rank holding the most (the dense byte mask would take
    /// `Hq · nq · nk` in all).
    let maskBytes: Int
    /// The K/V storage format the ring carried.
    let kvFormat: StorageFormat
    /// Query rows (over heads) that saw no key at all: output 0. TopCdf can keep only a block that lies
    /// after a row under token-level causal masking; a non-zero count says the mask starved those rows.
    let emptyRows: Int
    /// Whether the ring's payloads went to MPI from device memory (a CUDA-aware MPI).
    let messagesInPlace: Bool

    /// Collective: sums this rank's counters with every other rank's.
    init(result: ForwardResult, seconds: Double, layout: ShardLayout, heads: Int, kvHeads: Int, dim: Int,
         config: SpargeConfig, threads: Int, kvFormat: StorageFormat, comm: Communicator) {
        let s = result.statistics
        var sums = [Double(s.ring.bytesSent), Double(s.ring.bytesReceived), Double(s.ring.messagesSent),
                    Double(s.ring.denseRingBytes), Double(s.summaryBytes), Double(s.attention.pvBlocksSkipped),
                    Double(s.attention.keyBlocksVisited), s.ring.waitSeconds, s.ring.communicationSeconds,
                    Double(result.lse.reduce(0) { $0 + ($1 == -.infinity ? 1 : 0) })]
        comm.allreduceSum(&sums)
        var maxima = [s.ring.computeSeconds, s.summarySeconds, s.maskSeconds, s.ringSeconds, Double(result.mask.byteCount),
                      s.setupSeconds, s.finishSeconds]
        comm.allreduceMax(&maxima)
        seqLen = layout.seqLen; ranks = comm.size; self.threads = threads
        self.heads = heads; self.kvHeads = kvHeads; self.dim = dim; causal = config.causal
        density = s.mask.density; self.seconds = seconds
        bytesSent = Int(sums[0]); bytesReceived = Int(sums[1]); messages = Int(sums[2])
        denseRingBytes = Int(sums[3]); summaryBytes = Int(sums[4])
        pvSkipped = Int(sums[5]); blocksVisited = Int(sums[6])
        waitSeconds = sums[7]
        emptyRows = Int(sums[9])
        hiddenShare = sums[8] > 0 ? max(0, min(1, 1 - sums[7] / sums[8])) : 1
        computeSeconds = maxima[0]; summarySeconds = maxima[1]; maskSeconds = maxima[2]; ringSeconds = maxima[3]
        maskBytes = Int(maxima[4])
        setupSeconds = maxima[5]; finishSeconds = maxima[6]
        self.kvFormat = kvFormat
        messagesInPlace = s.messagesInPlace
    }

    /// Dense attention FLOPs: `4·N²·D·Hq`, half of that when causal.
    var denseFlops: Double {
        4 * Double(seqLen) * Double(seqLen) * Double(dim) * Double(heads) / (causal ? 2 : 1)
    }

    var gflopsDenseEquivalent: Double { denseFlops / seconds / 1e9 }

    var phaseLine: String {
        "phases (slowest rank): summaries \(Format.fixed(summarySeconds, 3)) s, mask \(Format.fixed(maskSeconds, 3)) s, "
            + "ring \(Format.fixed(ringSeconds, 3)) s (setup \(Format.fixed(setupSeconds, 3)) s, compute "
            + "\(Format.fixed(computeSeconds, 3)) s, finish \(Format.fixed(finishSeconds, 3)) s); "
            + "messages \(messages), communication hidden \(Format.fixed(hiddenShare * 100, 0))%, "
            + "summaries exchanged \(Format.bytes(summaryBytes)), mask \(Format.bytes(maskBytes)) per rank, "
            + "K/V \(kvFormat.rawValue)\(messagesInPlace ? " sent from device memory" : ""), "
            + "P·V skipped by λ \(pvSkipped) of \(blocksVisited) blocks"
            + (emptyRows > 0 ? "; \(emptyRows) query rows saw no key (output 0)" : "")
    }

    var json: JSONLine {
        var j = JSONLine()
        j.add("seq", seqLen); j.add("ranks", ranks); j.add("threads", threads)
        j.add("heads", heads); j.add("kv_heads", kvHeads); j.add("head_dim", dim); j.add("causal", causal)
        j.add("density", density); j.add("seconds", seconds); j.add("gflops_dense_equiv", gflopsDenseEquivalent)
        j.add("gflops_real", gflopsDenseEquivalent * density)
        j.add("bytes_sent", bytesSent); j.add("bytes_dense_ring", denseRingBytes)
        j.add("bytes_summaries", summaryBytes); j.add("mask_bytes", maskBytes); j.add("kv_precision", kvFormat.rawValue)
        j.add("messages", messages); j.add("mpi_device_buffers", messagesInPlace)
        j.add("summary_seconds", summarySeconds); j.add("mask_seconds", maskSeconds)
        j.add("ring_seconds", ringSeconds); j.add("compute_seconds", computeSeconds)
        j.add("setup_seconds", setupSeconds); j.add("finish_seconds", finishSeconds)
        j.add("wait_seconds", waitSeconds); j.add("comm_hidden_share", hiddenShare)
        j.add("pv_skipped", pvSkipped); j.add("blocks_visited", blocksVisited); j.add("empty_rows", emptyRows)
        return j
    }
}
