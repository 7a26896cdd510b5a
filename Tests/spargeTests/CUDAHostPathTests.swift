import Foundation
import SpargeFormats
import SpargeWorkloads
import SpargeTestSupport
import XCTest

/// `--backend cuda` where there is no GPU: the host side of the CUDA backend (loading, staging, block lists,
/// the two staging slots, the ring feeding it, the kernel bench) run against a stub driver compiled here, in
/// which memory is host memory and kernels do nothing. Outputs are then meaningless, so these tests check that
/// every path runs to its end, launches what it should, and moves the same ring traffic as the CPU backend;
/// the numbers are for `sparge selftest-cuda` on a real GPU (launch/gpu-check.sh). The first device run of
/// this backend ended in a trap that this stub reproduces in seconds.
final class CUDAHostPathTests: XCTestCase {
    /// Compiles the stub (`libcuda.so.1` and NVRTC in one library) into a scratch folder and points the
    /// CUDA loader at it for this test; skips where there is no C compiler.
    private func stub() throws -> (library: String, log: String) {
        guard let cc = findOnPath("clang") ?? findOnPath("cc") ?? findOnPath("gcc") else {
            throw XCTSkip("no C compiler on PATH to build the stub CUDA driver")
        }
        let folder = try scratchFolder(self)
        let source = folder + "/stub.c", library = folder + "/libstubcuda.so", log = folder + "/launches.log"
        try Self.stubSource.write(toFile: source, atomically: true, encoding: .utf8)
        let compile = Process()
        compile.executableURL = cc
        compile.arguments = ["-shared", "-fPIC", "-O1", "-o", library, source]
        try compile.run()
        compile.waitUntilExit()
        guard compile.terminationStatus == 0 else { throw XCTSkip("\(cc.path) could not build the stub driver") }
        for (key, value) in ["SPARGE_LIBCUDA": library, "SPARGE_NVRTC": library, "SPARGE_STUB_LOG": log] {
            setenv(key, value, 1)
        }
        addTeardownBlock { for key in ["SPARGE_LIBCUDA", "SPARGE_NVRTC", "SPARGE_STUB_LOG"] { unsetenv(key) } }
        return (library, log)
    }

    /// The stub's launches, "name grid block sharedBytes" each.
    private func launches(_ log: String) -> [String] {
        launchesWithStreams(log).map { line in line.split(separator: " ").dropLast().joined(separator: " ") }
    }

    /// The same with the stream each ran on last: "… streamN", N = 10 − the stream's priority.
    private func launchesWithStreams(_ log: String) -> [String] {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func testCUDABackendHostPathRunsOnAStubDriver() throws {
        let (_, log) = try stub()
        let workload = ["--workload", "llm", "--seq", "3072", "--heads", "2", "--kv-heads", "1", "--head-dim", "64",
                        "--causal", "--threads", "1", "--json"]
        // The mask on the stub "GPU" (kernels that do nothing): the host path must run to its end and launch
        // every mask kernel; the mask itself is meaningless here.
        let stubMask = try spargeSingle(["bench", "--backend", "cuda"] + workload, timeout: 120)
        XCTAssertEqual(stubMask.status, 0, transcript(stubMask))
        // (The selection runs as sparge_select_rows, or as its sorting variant where rows fit shared memory.)
        for name in ["sparge_summarize_blocks", "sparge_select_rows", "sparge_mask_rules"] {
            XCTAssertTrue(launches(log).contains { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "_sorted ") },
                          "\(name) was not launched:\n\(launches(log))")
        }
        // TopK over rows too long for the sort (4096 key blocks of 32): the softmax then the radix select, its
        // row's 4096 keys in shared memory (16 KiB) beside the fixed 10252 bytes.
        // SPARGE_CUDA_TOPK=heap: the heap kernel instead, for comparison.
        let longRows = ["bench", "--backend", "cuda", "--workload", "llm", "--seq", "131072", "--heads", "1", "--head-dim", "64",
                        "--block-k", "32", "--topk", "0.02", "--causal", "--threads", "1"]
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        let radix = try spargeSingle(longRows, timeout: 120)
        XCTAssertEqual(radix.status, 0, transcript(radix))
        XCTAssertTrue(launches(log).contains { $0.hasPrefix("sparge_softmax_rows ") }, "no softmax launch:\n\(launches(log))")
        XCTAssertTrue(launches(log).contains { $0.hasPrefix("sparge_topk_rows ") && $0.hasSuffix(" 256 \(4096 * 4 + 10252)") },
                      "no radix select of 256 threads and 26636 shared bytes:\n\(launches(log).filter { $0.hasPrefix("sparge_topk") })")
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        setenv("SPARGE_CUDA_TOPK", "heap", 1)
        let heap = try spargeSingle(longRows, timeout: 120)
        unsetenv("SPARGE_CUDA_TOPK")
        XCTAssertEqual(heap.status, 0, transcript(heap))
        XCTAssertTrue(launches(log).contains { $0.hasPrefix("sparge_select_rows ") }, "no heap launch:\n\(launches(log))")
        XCTAssertFalse(launches(log).contains { $0.hasPrefix("sparge_topk_rows ") }, "SPARGE_CUDA_TOPK=heap ran the radix select")
        // A dense pass pools no summaries and predicts no mask (its mask is every block), and still attends.
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        let dense = try spargeSingle(["bench", "--backend", "cuda", "--dense"] + workload, timeout: 120)
        XCTAssertEqual(dense.status, 0, transcript(dense))
        XCTAssertFalse(launches(log).contains { $0.hasPrefix("sparge_summarize_blocks ") || $0.hasPrefix("sparge_scores ") },
                       "a dense pass summarized or scored:\n\(launches(log))")
        XCTAssertTrue(launches(log).contains { $0.hasPrefix("sparge_attention") }, "no attention launch:\n\(launches(log))")
        // The stub is an sm_90 device whose driver encodes tensor maps: the default shapes run the Hopper
        // kernel, two 64-row tiles (384 threads) a CTA, and a shape it does not take falls back to mma.sync
        // with a hint; with SPARGE_CUDA_KERNEL=mma, 128-key blocks with 64-row tiles are the slow shape.
        let small = ["--workload", "llm", "--seq", "1024", "--heads", "2", "--head-dim", "64", "--threads", "1", "--block-k", "128"]
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        let hopper = try spargeSingle(["bench", "--backend", "cuda"] + small, timeout: 60)
        XCTAssertTrue(hopper.status == 0 && !hopper.stderr.contains("hint:"), transcript(hopper))
        let hopperLaunches = launches(log).filter { $0.hasPrefix("sparge_attention_sm90 ") }
        XCTAssertFalse(hopperLaunches.isEmpty, "no Hopper launch:\n\(launches(log))")
        for line in hopperLaunches {
            let fields = line.split(separator: " ").map(String.init)  // name, grid, block, shared bytes
            XCTAssertEqual(fields[2], "384", line)
            // 16 tiles of 64 rows a head (1024 tokens, 2 heads) pair up: fewer CTAs than the 32 tiles.
            XCTAssertLessThan(Int(fields[1]) ?? 99, 32, line)
        }
        // One rank builds its work list on the device, a CTA per query block (8 of 2 heads: 16), and, handed
        // bf16 tensors, converts V to fp16 on the side stream (the stub numbers a stream 10 − its priority:
        // the main stream 15, the side stream 10); SPARGE_CUDA_WORK_LIST=host leaves the list to the host,
        // whose pairing of neighbouring tiles gives the same 16 here.
        let workKernels = ["sparge_work_items", "sparge_work_starts", "sparge_work_place"]
        for (listOn, onDevice) in [("device", true), ("host", false)] {
            setenv("SPARGE_CUDA_WORK_LIST", listOn, 1)
            try "".write(toFile: log, atomically: true, encoding: .utf8)
            let bf16 = try spargeSingle(["bench", "--backend", "cuda", "--dtype", "bf16"] + small, timeout: 60)
            XCTAssertEqual(bf16.status, 0, transcript(bf16))
            let lines = launchesWithStreams(log)
            for name in workKernels {
                XCTAssertEqual(lines.contains { $0.hasPrefix(name + " ") }, onDevice, "\(name), list on the \(listOn):\n\(lines)")
            }
            XCTAssertEqual(lines.filter { $0.hasPrefix("sparge_enter_packed ") && $0.hasSuffix(" stream10") }.count, 1,
                           "V's fp16 copy on the side stream, once:\n\(lines)")
            XCTAssertEqual(lines.filter { $0.hasSuffix(" stream10") }.count, 1, "only V's copy on the side stream:\n\(lines)")
            let attention = lines.filter { $0.hasPrefix("sparge_attention_sm90 ") }
            XCTAssertEqual(attention.map { $0.split(separator: " ")[1] }, ["16"], "one launch of 16 CTAs:\n\(lines)")
        }
        unsetenv("SPARGE_CUDA_WORK_LIST")
        // A last wave of 28 CTAs on the stub's 132 SMs (160 query blocks: 160 CTAs) whose lists hold 160 steps:
        // a dense pass's list is split by the host into 4 parts a CTA, launched (112 CTAs) on the side stream
        // after the 132 whole lists, and merged (56 tiles) on the main stream;
        // not with the λ rule on, nor with SPARGE_CUDA_TAIL_SPLIT=0, nor where lists are short (causal: 80
        // steps on average). (A predicted mask's list is split on the device, which the stub does not run:
        // TailSplitTests and selftest-cuda cover it.)
        let tail = ["--workload", "random", "--seq", "20480", "--heads", "1", "--head-dim", "64", "--threads", "1",
                    "--block-k", "128", "--dense"]
        // Its consumers take turns (TURNS=1), in the whole lists' kernel and in the parts' variant alike,
        // unless SPARGE_CUDA_TURNS=0 (tried with the split on and with it off).
        for (extra, off, turns, grids) in [([String](), false, true, ["132 stream15", "112 stream10"]),
                                           (["--pv-threshold", "20"], false, true, ["160 stream15"]),
                                           ([], true, true, ["160 stream15"]), (["--causal"], false, true, ["160 stream15"]),
                                           ([], false, false, ["132 stream15", "112 stream10"]), ([], true, false, ["160 stream15"])] {
            if off { setenv("SPARGE_CUDA_TAIL_SPLIT", "0", 1) }
            if !turns { setenv("SPARGE_CUDA_TURNS", "0", 1) }
            try "".write(toFile: log, atomically: true, encoding: .utf8)
            let run = try spargeSingle(["bench", "--backend", "cuda"] + tail + extra, timeout: 60)
            unsetenv("SPARGE_CUDA_TAIL_SPLIT")
            unsetenv("SPARGE_CUDA_TURNS")
            XCTAssertEqual(run.status, 0, transcript(run))
            let lines = launchesWithStreams(log), split = grids.count == 2
            let context = "\(extra), SPARGE_CUDA_TAIL_SPLIT=0 \(off), turns \(turns):\n\(lines)"
            let define = "compile TURNS=\(turns ? 1 : 0)"
            XCTAssertEqual(lines.filter { $0.hasPrefix("compile ") }, split ? [define, define + " TAIL_PARTS=1"] : [define], context)
            XCTAssertEqual(lines.filter { $0.hasPrefix("sparge_attention_sm90 ") }.map { line in
                let f = line.split(separator: " "); return "\(f[1]) \(f.last!)"
            }, grids, context)
            XCTAssertEqual(lines.filter { $0.hasPrefix("sparge_merge_parts ") }.map { line in
                let f = line.split(separator: " "); return "\(f[1]) \(f.last!)"
            }, split ? ["56 stream15"] : [], context)
            // The merge comes after the parts' launch and the main stream's wait for it.
            if split, let merge = lines.firstIndex(where: { $0.hasPrefix("sparge_merge_parts ") }),
               let parts = lines.firstIndex(where: { $0.hasPrefix("sparge_attention_sm90 ") && $0.hasSuffix(" stream10") }) {
                XCTAssertLessThan(parts, merge, "merged before the parts' launch: " + context)
                XCTAssertTrue(lines[parts..<merge].contains("wait stream15 event"), "the merge does not wait for the parts: " + context)
            }
        }
        // In int8 too (P·V in fp16): V's copy on the side stream, and no block placed but K quantized.
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        let int8Pass = try spargeSingle(["bench", "--backend", "cuda", "--dtype", "bf16", "--precision", "int8"] + small, timeout: 60)
        XCTAssertEqual(int8Pass.status, 0, transcript(int8Pass))
        let int8Lines = launchesWithStreams(log)
        XCTAssertEqual(int8Lines.filter { $0.hasPrefix("sparge_enter_packed ") && $0.hasSuffix(" stream10") }.count, 1,
                       "int8: V's fp16 copy on the side stream:\n\(int8Lines)")
        XCTAssertFalse(int8Lines.contains { $0.hasPrefix("sparge_place_blocks ") }, "int8: V placed again:\n\(int8Lines)")
        XCTAssertTrue(int8Lines.contains { $0.hasPrefix("sparge_key_quantize ") }, "int8: K not quantized:\n\(int8Lines)")
        try checkInt8(log: log, kernel: "sparge_attention_sm90")
        setenv("SPARGE_CUDA_KERNEL", "mma", 1)
        try checkInt8(log: log, kernel: "sparge_attention")
        unsetenv("SPARGE_CUDA_KERNEL")
        let fallback = try spargeSingle(["bench", "--backend", "cuda", "--tile-q", "128"] + small, timeout: 60)
        XCTAssertTrue(fallback.status == 0 && fallback.stderr.contains("hint: the Hopper kernel takes --tile-q 64"), transcript(fallback))
        setenv("SPARGE_CUDA_KERNEL", "mma", 1)
        let slow = try spargeSingle(["bench", "--backend", "cuda"] + small, timeout: 60)
        let fast = try spargeSingle(["bench", "--backend", "cuda", "--tile-q", "128"] + small, timeout: 60)
        unsetenv("SPARGE_CUDA_KERNEL")
        XCTAssertTrue(slow.status == 0 && slow.stderr.contains("hint: with --block-k 128"), transcript(slow))
        XCTAssertTrue(fast.status == 0 && !fast.stderr.contains("hint:"), transcript(fast))
        // The resident pass's CUDA-aware path (payloads packed into and received in device memory, which
        // MPI reads and writes directly; the stub's device memory is host memory, as such an MPI sees it)
        // moves the same bytes as the pinned host path. Dense, so that the mask (every block up to the
        // diagonal) does not depend on the stub's kernels, which compute nothing.
        for launch in [Launch.ranks(2), .ranks(3)] {
            let staged = try launch.run(["bench", "--backend", "cuda", "--dense"] + workload, timeout: 120)
            setenv("SPARGE_MPI_DEVICE_BUFFERS", "1", 1)
            let direct = try launch.run(["bench", "--backend", "cuda", "--dense"] + workload, timeout: 120)
            unsetenv("SPARGE_MPI_DEVICE_BUFFERS")
            XCTAssertEqual(staged.status, 0, "\(launch)\n\(transcript(staged))")
            XCTAssertEqual(direct.status, 0, "\(launch), device buffers\n\(transcript(direct))")
            XCTAssertEqual(jsonField(staged.stdout, "mpi_device_buffers"), "false", "\(launch)\n\(staged.stdout)")
            XCTAssertEqual(jsonField(direct.stdout, "mpi_device_buffers"), "true", "\(launch)\n\(direct.stdout)")
            XCTAssertEqual(jsonField(direct.stdout, "bytes_sent"), jsonField(staged.stdout, "bytes_sent"), "\(launch)")
            XCTAssertNotEqual(jsonField(direct.stdout, "bytes_sent"), "0", "\(launch): the ring moved nothing")
        }
        // The rest with the mask on the CPU, so that the stub's ring must move exactly the CPU backend's bytes.
        setenv("SPARGE_CUDA_MASK", "cpu", 1)
        addTeardownBlock { unsetenv("SPARGE_CUDA_MASK") }
        for launch in [Launch.single, .ranks(2), .ranks(3)] {
            let cuda = try launch.run(["bench", "--backend", "cuda"] + workload, timeout: 120)
            XCTAssertEqual(cuda.status, 0, "\(launch), cuda\n\(transcript(cuda))")
            XCTAssertTrue(cuda.stdout.contains("\"backend\": \"cuda bf16, Stub GPU\""), "\(launch)\n\(cuda.stdout)")
            // The cuda backend's K/V travel as bf16 by default; the CPU's as f32 unless asked.
            let cpu = try launch.run(["bench", "--backend", "cpu", "--kv-precision", "bf16"] + workload, timeout: 120)
            XCTAssertEqual(cpu.status, 0, "\(launch), cpu\n\(transcript(cpu))")
            // The ring moves the same blocks whoever computes them.
            XCTAssertEqual(jsonField(cuda.stdout, "bytes_sent"), jsonField(cpu.stdout, "bytes_sent"), "\(launch)")
            XCTAssertEqual(jsonField(cuda.stdout, "density"), jsonField(cpu.stdout, "density"), "\(launch)")
        }
        // One call in parts (a 1 MiB staging budget): each part launches its own attention kernel.
        // (Either kernel: the stub is an sm_90 device, where the default shapes run the Hopper one.)
        func attentionLaunches() -> Int {
            launches(log).filter { $0.hasPrefix("sparge_attention ") || $0.hasPrefix("sparge_attention_sm90 ") }.count
        }
        let before = attentionLaunches()
        setenv("SPARGE_CUDA_STAGING_MIB", "1", 1)
        addTeardownBlock { unsetenv("SPARGE_CUDA_STAGING_MIB") }
        // 192 key blocks of 16 KiB (K and V, 64 rows, D 64, 16 bits): 3 parts of at most 64.
        let longer = ["--workload", "llm", "--seq", "12288", "--heads", "2", "--kv-heads", "1", "--head-dim", "64",
                      "--causal", "--threads", "1"]
        let parts = try spargeSingle(["bench", "--backend", "cuda"] + longer, timeout: 120)
        XCTAssertEqual(parts.status, 0, transcript(parts))
        let partLaunches = attentionLaunches() - before
        XCTAssertEqual(partLaunches, 3, "a call over the staging budget should go up in parts")
        unsetenv("SPARGE_CUDA_STAGING_MIB")

        let kernels = launches(log)
        XCTAssertTrue(kernels.contains { $0.hasPrefix("sparge_attention ") || $0.hasPrefix("sparge_attention_sm90 ") },
                      "no attention kernel launched:\n\(kernels)")
        XCTAssertTrue(kernels.contains { $0.hasPrefix("sparge_scatter ") }, "no blocks placed:\n\(kernels)")
        XCTAssertTrue(kernels.contains { $0.hasPrefix("sparge_finish ") }, "no output normalised:\n\(kernels)")

        let bench = try spargeSingle(["bench-kernel", "--seq", "2048", "--heads", "2", "--head-dim", "128", "--repeat", "2",
                                      "--json"], timeout: 120)
        XCTAssertEqual(bench.status, 0, transcript(bench))
        XCTAssertTrue(bench.stdout.contains("\"device\": \"Stub GPU\""), bench.stdout)
        // int8 through a whole resident pass (dense: the stub computes nothing, so only a mask that needs no
        // prediction is the CPU's): Q quantized on the device, the int8 kernel launched, the pass's time beside.
        unsetenv("SPARGE_CUDA_MASK")  // int8 needs the mask predicted on the device
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        let int8 = try spargeSingle(["bench-kernel", "--seq", "1024", "--heads", "2", "--head-dim", "128", "--repeat", "2",
                                     "--dense", "--precision", "int8", "--json"], timeout: 120)
        XCTAssertEqual(int8.status, 0, transcript(int8))
        XCTAssertTrue(int8.stdout.contains("\"precision\": \"int8\"") && int8.stdout.contains("\"pass_ms\""), int8.stdout)
        XCTAssertTrue(launches(log).contains { $0.hasPrefix("sparge_query_quantize ") }, "Q not quantized:\n\(launches(log))")
        XCTAssertEqual(launches(log).filter { $0.hasPrefix("sparge_attention_sm90 ") }.count, 3,
                       "one int8 kernel launch a pass, the first uncounted:\n\(launches(log))")
    }

    /// `--precision int8` on the stub's sm_90, on `kernel`: the Hopper one (`sparge_attention_sm90`), or the
    /// `mma.sync` one (`sparge_attention`, with SPARGE_CUDA_KERNEL=mma) and its int8 shared memory (Q and K one
    /// byte an element). Q quantized once, the kernel launched (the Hopper one's int8 tensor maps accepted by
    /// the stub), the LSE's shifts passed to `sparge_finish` with several ranks. Each rank quantizes K once,
    /// its own blocks (one `sparge_key_quantize` a rank: a received block is copied, never quantized again),
    /// and the ring carries K as int8 rows and the block's scale in a 16-byte slot, V in the storage format,
    /// whichever kernel reads them; one rank sends nothing. Head dimension 64, which the Hopper kernel does not
    /// take in int8, runs on the `mma.sync` one; int8 with the mask on the host is refused on every rank.
    private func checkInt8(log: String, kernel: String) throws {
        // 1024 tokens: 16 whole blocks of 64 rows, so that the bf16 run's bytes count the blocks sent
        // (2·64·128·2 = 32768 bytes each); an int8 block is 64·128 + 16 + 64·128·2 = 24592 bytes (0.7505×),
        // with f32 K/V 64·128 + 16 + 64·128·4 = 40976 against 65536 (0.6253×).
        let shape = ["--workload", "llm", "--seq", "1024", "--heads", "4", "--kv-heads", "2", "--head-dim", "128",
                     "--causal", "--threads", "1", "--json"]
        // The mma.sync kernel's CTA (4 warps, 64-row tiles, 64-key blocks, D 128): Q and two K tiles of int8,
        // two V tiles of 16 bits, the λ reduction; in 16 bits it would be (64 + 4·64)·256 + 32 = 81952.
        let (qAndK, values, reduction): (Int, Int, Int) = ((64 + 2 * 64) * 128, 2 * 64 * 128 * 2, 2 * 4 * 4)
        let mmaLaunch = " 128 \(qAndK + values + reduction)"
        for launch in [Launch.single, .ranks(2), .ranks(3)] {
            let ranks = if case .ranks(let n) = launch { n } else { 1 }
            for (kv, storedBlock, int8Block) in [("bf16", 32768, 24592), ("f32", 65536, 40976)] {
                let label = "\(kernel), \(launch), K/V \(kv)"
                try "".write(toFile: log, atomically: true, encoding: .utf8)
                let int8 = try launch.run(["bench", "--backend", "cuda", "--precision", "int8", "--dense", "--kv-precision", kv]
                                          + shape, timeout: 120)
                XCTAssertEqual(int8.status, 0, "\(label)\n\(transcript(int8))")
                XCTAssertTrue(int8.stdout.contains("\"backend\": \"cuda int8, Stub GPU\""), "\(label)\n\(int8.stdout)")
                for name in ["sparge_query_row_scales", "sparge_query_quantize", "sparge_key_row_max", "sparge_key_block_scale",
                             kernel] + (ranks > 1 ? ["sparge_copy_blocks", "sparge_finish"] : []) {
                    XCTAssertTrue(launches(log).contains { $0.hasPrefix(name + " ") }, "\(label): \(name) was not launched")
                }
                if kernel == "sparge_attention" {
                    XCTAssertTrue(launches(log).filter { $0.hasPrefix("sparge_attention") }.allSatisfy { $0.hasSuffix(mmaLaunch) },
                                  "\(label): not the mma.sync kernel's int8 CTA (\(mmaLaunch)):\n\(launches(log))")
                }
                XCTAssertEqual(launches(log).filter { $0.hasPrefix("sparge_key_quantize ") }.count, ranks,
                               "\(label): K quantized other than once a rank:\n\(launches(log))")
                let stored = try launch.run(["bench", "--backend", "cuda", "--dense", "--kv-precision", kv] + shape, timeout: 120)
                XCTAssertEqual(stored.status, 0, "\(label)\n\(transcript(stored))")
                let (sent, storedSent) = (Int(jsonField(int8.stdout, "bytes_sent") ?? "") ?? -1,
                                          Int(jsonField(stored.stdout, "bytes_sent") ?? "") ?? -1)
                let dense = (Int(jsonField(int8.stdout, "bytes_dense_ring") ?? "") ?? -1,
                             Int(jsonField(stored.stdout, "bytes_dense_ring") ?? "") ?? -1)
                guard ranks > 1 else {
                    XCTAssertEqual([sent, storedSent, dense.0, dense.1], [0, 0, 0, 0], "\(label): one rank sends nothing")
                    continue
                }
                XCTAssertTrue(storedSent > 0 && storedSent % storedBlock == 0, "\(label): \(storedSent) bytes")
                XCTAssertEqual(sent, storedSent / storedBlock * int8Block, "\(label): int8 blocks of \(int8Block) bytes")
                XCTAssertEqual(dense.0, dense.1 / storedBlock * int8Block, "\(label): the dense ring's yardstick")
                XCTAssertEqual(Double(sent) / Double(storedSent), Double(int8Block) / Double(storedBlock), accuracy: 1e-12, label)
                XCTAssertLessThan(Double(sent) / Double(storedSent), kv == "bf16" ? 0.751 : 0.626, label)
            }
            guard ranks > 1 else { continue }
            // verify's expected traffic (from the mask alone) counts blocks of the same layout, a partial one
            // (1000 = 15·64 + 40 tokens) included; the outputs of kernels that do nothing fail the numeric
            // checks, so only the traffic is read.
            let verify = try launch.run(["verify", "--backend", "cuda", "--precision", "int8", "--dense", "--no-reference",
                                         "--workload", "llm", "--seq", "1000", "--heads", "4", "--kv-heads", "2",
                                         "--head-dim", "128", "--causal", "--threads", "1", "--json"], timeout: 120)
            XCTAssertNotNil(jsonField(verify.stdout, "bytes_expected"), "\(kernel), \(launch)\n\(transcript(verify))")
            XCTAssertEqual(jsonField(verify.stdout, "bytes_sent"), jsonField(verify.stdout, "bytes_expected"),
                           "\(kernel), \(launch)\n\(verify.stdout)")
            XCTAssertEqual(jsonField(verify.stdout, "messages"), jsonField(verify.stdout, "messages_expected"), "\(kernel), \(launch)")
            XCTAssertNotEqual(jsonField(verify.stdout, "bytes_sent"), "0", "\(kernel), \(launch): the ring moved nothing")
        }
        guard kernel == "sparge_attention_sm90" else { return }
        // D 64 in int8: the mma.sync kernel, with 64-byte int8 rows ((64 + 128)·64 + 2·64·64·2 + 32 bytes a CTA).
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        let d64 = try Launch.ranks(2).run(["bench", "--backend", "cuda", "--precision", "int8", "--dense", "--workload", "llm",
                                            "--seq", "512", "--heads", "2", "--head-dim", "64", "--threads", "1"], timeout: 60)
        XCTAssertEqual(d64.status, 0, transcript(d64))
        let attention = launches(log).filter { $0.hasPrefix("sparge_attention") }
        XCTAssertTrue(!attention.isEmpty && attention.allSatisfy { $0.hasPrefix("sparge_attention ") && $0.hasSuffix(" 128 28704") },
                      "D 64 int8 did not run the mma.sync kernel's int8 CTA:\n\(launches(log))")
        setenv("SPARGE_CUDA_MASK", "cpu", 1)
        let refused = try Launch.ranks(2).run(["bench", "--backend", "cuda", "--precision", "int8", "--workload", "llm",
                                                "--seq", "512", "--heads", "2", "--head-dim", "128", "--threads", "1"], timeout: 60)
        unsetenv("SPARGE_CUDA_MASK")
        XCTAssertNotEqual(refused.status, 0, transcript(refused))
        XCTAssertTrue(refused.stderr.contains("--precision int8 runs in the resident pass"), transcript(refused))
    }

    /// `run` with the CUDA backend reads the files onto the device in pinned chunks of whole rows (zigzag
    /// shards under `mpirun -np 2`, causal) and runs to its end; a NaN in a file is named with its file and row,
    /// on every rank.
    func testRunReadsFilesOntoTheDevice() throws {
        _ = try stub()
        let folder = try scratchFolder(self)
        let inputs = try SmallInputs(shape: WorkloadShape(queryHeads: 2, kvHeads: 1, seqLen: 600, headDim: 64))
        let good = try inputs.writeNPY(to: folder)
        let out = ["--output", "\(folder)/out.npy", "--force", "--causal", "--backend", "cuda"]
        for launch in [Launch.single, .ranks(2)] {
            let result = try launch.run(["run"] + good + out, timeout: 120)
            XCTAssertEqual(result.status, 0, "\(launch)\n\(transcript(result))")
        }
        var q = inputs.q
        q[1, 437, 3] = .nan
        let bad = "\(folder)/nan-q.npy"
        try NPYWriter.write(path: bad, shape: [q.heads, q.rows, q.dim], values: q.data)
        var args = good
        args[args.firstIndex(of: "--q")! + 1] = bad
        let result = try Launch.ranks(2).run(["run"] + args + out, timeout: 120)
        XCTAssertNotEqual(result.status, 0, transcript(result))
        XCTAssertTrue(result.stderr.contains("nan-q.npy") && result.stderr.contains("row 437"), transcript(result))
    }

    func testMissingDriverIsNamedAndAutoFallsBackToTheCPU() throws {
        setenv("SPARGE_LIBCUDA", "/nonexistent/libcuda.so.1", 1)
        addTeardownBlock { unsetenv("SPARGE_LIBCUDA") }
        let args = ["bench", "--seq", "1024", "--heads", "1", "--head-dim", "64", "--threads", "1"]
        let cuda = try spargeSingle(args + ["--backend", "cuda"], timeout: 60)
        if cuda.status == 0 { throw XCTSkip("this machine has a CUDA driver on the loader's path") }
        XCTAssertEqual(cuda.status, 1, transcript(cuda))
        for name in ["/nonexistent/libcuda.so.1", "libcuda.so.1"] {
            XCTAssertTrue(cuda.stderr.contains(name), "the error must list \(name)\n\(cuda.stderr)")
        }
        let auto = try spargeSingle(args + ["--backend", "auto"], timeout: 60)
        XCTAssertEqual(auto.status, 0, transcript(auto))
        XCTAssertTrue(auto.stderr.contains("--backend auto: using the CPU"), auto.stderr)
        XCTAssertTrue(auto.stdout.contains("backend cpu"), auto.stdout)
    }

    /// The raw text of `"name": value` in a JSON line.
    private func jsonField(_ text: String, _ name: String) -> String? {
        guard let range = text.range(of: "\"\(name)\": ") else { return nil }
        return String(text[range.upperBound...].prefix { $0 != "," && $0 != "}" })
    }

    /// The stub: the driver and NVRTC functions SpargeCUDA looks up, with host memory as device memory and
    /// kernels that do nothing but log their launch to `$SPARGE_STUB_LOG`.
    static let stubSource = #"""
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    typedef unsigned long long u64;
    int cuInit(unsigned f) { return 0; }
    int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
    int cuGetErrorName(int r, const char **s) { *s = "STUB_ERROR"; return 0; }
    int cuGetErrorString(int r, const char **s) { *s = "stub error"; return 0; }
    int cuDeviceGetCount(int *c) { *c = 1; return 0; }
    int cuDeviceGet(int *d, int o) { *d = o; return 0; }
    int cuDeviceGetName(char *n, int len, int d) { strncpy(n, "Stub GPU", len); return 0; }
    int cuDeviceGetAttribute(int *v, int a, int d) { *v = a == 75 ? 9 : a == 76 ? 0 : a == 16 ? 132 : a == 97 ? 232448 : 0; return 0; }
    int cuDevicePrimaryCtxRetain(void **c, int d) { *c = (void *)1; return 0; }
    int cuCtxSetCurrent(void *c) { return 0; }
    int cuModuleLoadData(void **m, const void *img) { *m = (void *)2; return 0; }
    int cuModuleGetFunction(void **f, void *m, const char *n) { *f = (void *)strdup(n); return 0; }
    int cuFuncSetAttribute(void *f, int a, int v) { return 0; }
    int cuFuncGetAttribute(int *v, int a, void *f) { *v = a == 4 ? 128 : 0; return 0; }
    int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       unsigned smem, void *s, void **p, void **e) {
        const char *path = getenv("SPARGE_STUB_LOG");
        FILE *log = path ? fopen(path, "a") : NULL;
        if (log) { fprintf(log, "%s %u %u %u stream%ld\n", (const char *)f, gx, bx, smem, (long)s); fclose(log); }
        return 0;
    }
    int cuMemAlloc_v2(u64 *p, size_t n) { *p = (u64)calloc(1, n); return 0; }
    int cuMemFree_v2(u64 p) { free((void *)p); return 0; }
    int cuMemHostAlloc(void **p, size_t n, unsigned f) { *p = calloc(1, n); return 0; }
    int cuMemFreeHost(void *p) { free(p); return 0; }
    int cuMemcpyHtoD_v2(u64 d, const void *s, size_t n) { memcpy((void *)d, s, n); return 0; }
    int cuMemcpyDtoH_v2(void *d, u64 s, size_t n) { memcpy(d, (void *)s, n); return 0; }
    int cuMemcpyHtoDAsync_v2(u64 d, const void *s, size_t n, void *st) { memcpy((void *)d, s, n); return 0; }
    int cuMemcpyDtoHAsync_v2(void *d, u64 s, size_t n, void *st) { memcpy(d, (void *)s, n); return 0; }
    int cuMemsetD8_v2(u64 d, unsigned char c, size_t n) { memset((void *)d, c, n); return 0; }
    int cuMemGetInfo_v2(size_t *f, size_t *t) { *f = 1 << 30; *t = 1 << 30; return 0; }
    int cuStreamCreateWithPriority(void **s, unsigned f, int priority) { *s = (void *)(long)(10 - priority); return 0; }
    int cuCtxGetStreamPriorityRange(int *least, int *greatest) { *least = 0; *greatest = -5; return 0; }
    int cuStreamSynchronize(void *s) { return 0; }
    int cuStreamQuery(void *s) { return 0; }
    int cuStreamWaitEvent(void *s, void *e, unsigned f) {
        const char *path = getenv("SPARGE_STUB_LOG");
        FILE *log = path ? fopen(path, "a") : NULL;
        if (log) { fprintf(log, "wait stream%ld event\n", (long)s); fclose(log); }
        return 0;
    }
    int cuEventCreate(void **e, unsigned f) { *e = (void *)4; return 0; }
    int cuEventRecord(void *e, void *s) { return 0; }
    int cuEventDestroy_v2(void *e) { return 0; }
    int cuEventSynchronize(void *e) { return 0; }
    int cuEventElapsedTime(float *ms, void *a, void *b) { *ms = 1.0f; return 0; }
    int cuTensorMapEncodeTiled(void *map, int type, unsigned rank, void *address, const u64 *sizes, const u64 *strides,
                               const unsigned *box, const unsigned *elementStrides, int interleave, int swizzle,
                               int promotion, int fill) {
        // What the Hopper kernel asks for: 2-D, 128-byte rows of a box (bytes in int8, 16-bit words
        // otherwise), 128-byte swizzle.
        unsigned size = type == 0 ? 1 : 2;
        if (rank != 2 || (type != 0 && type != 1) || box[0] * size != 128 || swizzle != 3 || strides[0] % 16 != 0
            || address == NULL) return 1;
        memset(map, 7, 128);
        return 0;
    }
    int nvrtcVersion(int *a, int *b) { *a = 13; *b = 0; return 0; }
    const char *nvrtcGetErrorString(int r) { return "stub nvrtc error"; }
    int nvrtcCreateProgram(void **p, const char *src, const char *name, int n, const char **h, const char **i) { *p = (void *)1; return 0; }
    int nvrtcDestroyProgram(void **p) { return 0; }
    int nvrtcCompileProgram(void *p, int n, const char **o) {
        // Logs the Hopper kernel's switch of consumer turns, and whether the module is its parts' variant.
        const char *path = getenv("SPARGE_STUB_LOG"), *turns = NULL;
        int parts = 0;
        for (int i = 0; i < n; ++i) {
            if (strncmp(o[i], "--define-macro=TURNS=", 21) == 0) turns = o[i] + 15;
            if (strcmp(o[i], "--define-macro=TAIL_PARTS=1") == 0) parts = 1;
        }
        FILE *log = path && turns ? fopen(path, "a") : NULL;
        if (log) { fprintf(log, "compile %s%s\n", turns, parts ? " TAIL_PARTS=1" : ""); fclose(log); }
        return 0;
    }
    int nvrtcGetProgramLogSize(void *p, size_t *n) { *n = 1; return 0; }
    int nvrtcGetProgramLog(void *p, char *l) { l[0] = 0; return 0; }
    int nvrtcGetCUBINSize(void *p, size_t *n) { *n = 16; return 0; }
    int nvrtcGetCUBIN(void *p, char *c) { memset(c, 1, 16); return 0; }
    """#
}
