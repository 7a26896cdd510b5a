import SpargeRing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The hidden subcommand `sparge selftest-communicator [--fail-rank R]`, run under `mpirun` by the tests
/// (Tests/SpargeRingTests/CommunicatorTests.swift).
///
/// Checks the MPI communicator against values every rank computes on its own: reductions, gathers of uneven
/// (and empty) sizes, and a ring of non-blocking messages of formula-given sizes, some empty (those are not
/// posted, as in the ring), with the received bytes and the point-to-point counters checked exactly.
/// With `--fail-rank R`, rank R fails through `failAll` while the others wait in a barrier: every rank must
/// end, non-zero, with the message on standard error.
///
/// Rank 0 prints `communicator self-test passed on N ranks` (`1 rank`) and every rank returns 0, or the
/// failed checks are printed (each by the rank that saw it) and every rank returns 1.
func runCommunicatorSelfTest(arguments: [String]) -> Int32 {
    var failRank: Int?
    var remaining = arguments[...]
    while let argument = remaining.popFirst() {
        switch argument {
        case "--fail-rank":
            guard let value = remaining.popFirst().flatMap({ Int($0) }) else {
                selfTestPrintError("sparge: error: --fail-rank needs a rank number")
                return 2
            }
            failRank = value
        default:
            selfTestPrintError("sparge: error: selftest-communicator: unknown argument '\(argument)'")
            return 2
        }
    }

    let comm: MPICommunicator
    do {
        comm = try MPICommunicator()
    } catch {
        selfTestPrintError("sparge: error: \(error)")
        return 1
    }

    if let failRank {
        guard (0..<comm.size).contains(failRank) else {
            if comm.rank == 0 { selfTestPrintError("sparge: error: --fail-rank \(failRank) on \(comm.size) ranks") }
            comm.finalize()
            return 2
        }
        if comm.rank == failRank {
            usleep(200_000)  // let the other ranks reach the barrier first: the abort must free blocked ranks
            failAll("injected failure on rank \(failRank) (selftest-communicator --fail-rank)", on: comm)
        }
        comm.barrier()
        selfTestPrintError("[rank \(comm.rank)] barrier returned although rank \(failRank) failed")
        return 1
    }

    var failures = [String]()
    checkReductions(comm, &failures)
    checkGathers(comm, &failures)
    checkRing(comm, &failures)
    checkErrors(comm, &failures)

    for failure in failures { selfTestPrintError("[rank \(comm.rank)] self-test: \(failure)") }
    let anyFailed = comm.anyRank(!failures.isEmpty)
    if comm.rank == 0 {
        let ranks = comm.size == 1 ? "1 rank" : "\(comm.size) ranks"
        if anyFailed {
            selfTestPrintError("communicator self-test FAILED on \(ranks)")
        } else {
            print("communicator self-test passed on \(ranks)")
        }
    }
    comm.finalize()
    return anyFailed ? 1 : 0
}

// MARK: - Collectives

private func checkReductions(_ comm: Communicator, _ failures: inout [String]) {
    let p = comm.size, r = comm.rank

    // Sums of small integers plus quarters: every partial sum is exact in Double, so any order gives them.
    var sums = (0..<1000).map { Double(r + 1) * Double($0) + 0.25 }
    comm.allreduceSum(&sums)
    let expectedSums = (0..<1000).map { Double($0) * Double(p * (p + 1) / 2) + 0.25 * Double(p) }
    if sums != expectedSums { failures.append("allreduceSum: first mismatch at \(firstMismatch(sums, expectedSums))") }

    let local = { (rank: Int, i: Int) in Double((rank * 37 + i * 11) % 17) - 8.5 }
    var maxima = (0..<100).map { local(r, $0) }
    var minima = maxima
    comm.allreduceMax(&maxima)
    comm.allreduceMin(&minima)
    let expectedMax = (0..<100).map { i in (0..<p).map { local($0, i) }.max()! }
    let expectedMin = (0..<100).map { i in (0..<p).map { local($0, i) }.min()! }
    if maxima != expectedMax { failures.append("allreduceMax([Double]) at \(firstMismatch(maxima, expectedMax))") }
    if minima != expectedMin { failures.append("allreduceMin([Double]) at \(firstMismatch(minima, expectedMin))") }

    // 64-bit values: Int must not travel as a 32-bit int.
    let big = 1 << 40
    let maxInt = comm.allreduceMax(big + r * 3 - 5)
    let minInt = comm.allreduceMin(big + r * 3 - 5)
    if maxInt != big + (p - 1) * 3 - 5 { failures.append("allreduceMax(Int) = \(maxInt)") }
    if minInt != big - 5 { failures.append("allreduceMin(Int) = \(minInt)") }

    var bits = [UInt8](repeating: 0, count: p / 8 + 3)
    bits[r / 8] |= 1 << UInt8(r % 8)
    comm.allreduceBitwiseOr(&bits)
    var expectedBits = [UInt8](repeating: 0, count: p / 8 + 3)
    for rank in 0..<p { expectedBits[rank / 8] |= 1 << UInt8(rank % 8) }
    if bits != expectedBits { failures.append("allreduceBitwiseOr = \(bits), expected \(expectedBits)") }
}

/// Rank `rank`'s contribution to the gathers: `rank·7+1` bytes, except rank 1, which gives none.
private func gatherContribution(_ rank: Int) -> [UInt8] {
    let count = rank == 1 ? 0 : rank * 7 + 1
    return (0..<count).map { UInt8(truncatingIfNeeded: rank * 29 + $0 * 3 + 1) }
}

private func checkGathers(_ comm: Communicator, _ failures: inout [String]) {
    let p = comm.size, r = comm.rank
    let all = (0..<p).map(gatherContribution)
    let gathered = comm.allgatherv(all[r], counts: all.map(\.count))
    if gathered != all.flatMap({ $0 }) { failures.append("allgatherv: \(gathered.count) bytes, not the expected ones") }

    let perRank = comm.allgather(bytes: all[r])
    if perRank != all {
        failures.append("allgather(bytes:): counts \(perRank.map(\.count)), expected \(all.map(\.count))")
    }

    if !comm.isIdenticalOnAllRanks([1, 2, 3]) {
        failures.append("isIdenticalOnAllRanks: equal bytes reported different")
    }
    if p > 1 && comm.isIdenticalOnAllRanks([UInt8(r)]) {
        failures.append("isIdenticalOnAllRanks: different bytes reported equal")
    }
}

// MARK: - Ring

private let ringSteps = 4
private let ringLanes = 2

/// The size of the message that rank `source` sends on `lane` at `step`: empty, tiny, small, above
/// OpenMPI's shared-memory eager limit, or large enough for its rendezvous protocol.
private func ringMessageSize(source: Int, step: Int, lane: Int) -> Int {
    switch (source * 7 + step * 3 + lane * 2) % 5 {
    case 0: return 0
    case 1: return 1
    case 2: return 1000 + source * 31 + step
    case 3: return 70_000 + source
    default: return 300_000 + step * 17
    }
}

private func ringByte(source: Int, step: Int, lane: Int, index i: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: source &* 131 &+ step &* 17 &+ lane &* 59 &+ i &* 7 &+ i >> 8)
}

private func checkRing(_ comm: Communicator, _ failures: inout [String]) {
    let p = comm.size, r = comm.rank
    let next = (r + 1) % p, previous = (r + p - 1) % p
    let sentBefore = (comm.bytesSent, comm.messagesSent, comm.bytesReceived, comm.messagesReceived)
    var expectedBytesSent = 0, expectedMessagesSent = 0, expectedBytesReceived = 0, expectedMessagesReceived = 0

    for step in 0..<ringSteps {
        var outgoing = [[UInt8]](), incoming = [UnsafeMutableRawBufferPointer](), incomingLanes = [Int]()
        var requests = [Request]()
        for lane in 0..<ringLanes {
            let count = ringMessageSize(source: previous, step: step, lane: lane)
            guard count > 0 else { continue }  // empty messages are not posted, as in the ring
            // One byte of slack: a message must report its own length, not the buffer's.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count + 1, alignment: 64)
            buffer.initializeMemory(as: UInt8.self, repeating: 0xEE)
            incoming.append(buffer)
            incomingLanes.append(lane)
            do {
                requests.append(try comm.irecv(into: buffer, from: previous, tag: step * ringLanes + lane))
            } catch {
                failures.append("irecv step \(step) lane \(lane): \(error)")
            }
            expectedBytesReceived += count
            expectedMessagesReceived += 1
        }
        for lane in 0..<ringLanes {
            let count = ringMessageSize(source: r, step: step, lane: lane)
            guard count > 0 else { continue }
            outgoing.append((0..<count).map { ringByte(source: r, step: step, lane: lane, index: $0) })
            expectedBytesSent += count
            expectedMessagesSent += 1
        }
        // Sends are posted from stable storage: `outgoing` is not modified until they complete.
        var lane = 0
        for message in outgoing {
            while ringMessageSize(source: r, step: step, lane: lane) == 0 { lane += 1 }
            do {
                let request = try message.withUnsafeBytes { try comm.isend($0, to: next, tag: step * ringLanes + lane) }
                requests.append(request)
            } catch {
                failures.append("isend step \(step) lane \(lane): \(error)")
            }
            lane += 1
        }
        // Poll, as the ring's communicating thread does, until everything of this step is done.
        var done = 0
        while done < requests.count {
            done = 0
            for i in requests.indices where comm.test(&requests[i]) { done += 1 }
        }
        for (buffer, lane) in zip(incoming, incomingLanes) {
            let count = ringMessageSize(source: previous, step: step, lane: lane)
            let received = requests.first { $0.direction == .receive && $0.tag == step * ringLanes + lane }
            if received?.byteCount != count {
                let got = received?.byteCount ?? -1
                failures.append("ring step \(step) lane \(lane): received \(got) bytes, expected \(count)")
            }
            let bytes = buffer.bindMemory(to: UInt8.self)
            let expectedByte = { ringByte(source: previous, step: step, lane: lane, index: $0) }
            if let bad = (0..<count).first(where: { bytes[$0] != expectedByte($0) }) {
                failures.append("ring step \(step) lane \(lane): byte \(bad) of \(count) differs")
            }
            if bytes[count] != 0xEE { failures.append("ring step \(step) lane \(lane): wrote past the message") }
            buffer.deallocate()
        }
    }

    let counters = (
        comm.bytesSent - sentBefore.0, comm.messagesSent - sentBefore.1,
        comm.bytesReceived - sentBefore.2, comm.messagesReceived - sentBefore.3)
    let expected = (expectedBytesSent, expectedMessagesSent, expectedBytesReceived, expectedMessagesReceived)
    if counters != expected {
        failures.append(
            "counters (bytes sent, messages sent, bytes received, messages received) = \(counters), "
                + "expected \(expected)")
    }
}

// MARK: - Errors

private func checkErrors(_ comm: Communicator, _ failures: inout [String]) {
    let messagesBefore = comm.messagesSent
    let byte: [UInt8] = [1]
    do {
        _ = try byte.withUnsafeBytes { try comm.isend($0, to: comm.size, tag: 0) }
        failures.append("isend to rank \(comm.size) of \(comm.size) did not throw")
    } catch let error as MPIError {
        if !error.description.contains("MPI_Isend") { failures.append("isend error names no function: \(error)") }
    } catch {
        failures.append("isend threw a non-MPI error: \(error)")
    }
    if comm.messagesSent != messagesBefore { failures.append("a refused isend was counted") }
}

// MARK: - Helpers

private func firstMismatch(_ a: [Double], _ b: [Double]) -> String {
    guard let i = (0..<min(a.count, b.count)).first(where: { a[$0] != b[$0] }) else {
        return "length \(a.count) vs \(b.count)"
    }
    return "index \(i): \(a[i]) vs \(b[i])"
}

private func selfTestPrintError(_ line: String) {
    fflush(stdout)
    fputs(line + "\n", stderr)
}
