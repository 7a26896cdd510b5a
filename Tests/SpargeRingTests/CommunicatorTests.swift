import XCTest
import SpargeTestSupport
@testable import SpargeRing

// MARK: - SingleProcessCommunicator

final class SingleProcessCommunicatorTests: XCTestCase {
    func testIsRankZeroOfOneAndCollectivesAreIdentity() {
        let comm = SingleProcessCommunicator()
        XCTAssertEqual(comm.rank, 0)
        XCTAssertEqual(comm.size, 1)
        comm.barrier()

        var values: [Double] = [1.5, -2, .infinity]
        comm.allreduceSum(&values)
        XCTAssertEqual(values, [1.5, -2, .infinity])
        comm.allreduceMax(&values)
        comm.allreduceMin(&values)
        XCTAssertEqual(values, [1.5, -2, .infinity])
        XCTAssertEqual(comm.allreduceMax(1 << 40), 1 << 40)
        XCTAssertEqual(comm.allreduceMin(-7), -7)
        var bits: [UInt8] = [0b1010, 0]
        comm.allreduceBitwiseOr(&bits)
        XCTAssertEqual(bits, [0b1010, 0])

        XCTAssertEqual(comm.allgatherv([1, 2, 3], counts: [3]), [1, 2, 3])
        XCTAssertEqual(comm.allgatherv([], counts: [0]), [])
        XCTAssertEqual(comm.allgather(bytes: [9, 8]), [[9, 8]])
        XCTAssertEqual(comm.allgather(bytes: []), [[]])
        XCTAssertTrue(comm.isIdenticalOnAllRanks([4, 5]))
        XCTAssertTrue(comm.anyRank(true))
        XCTAssertFalse(comm.anyRank(false))
    }

    func testSendToSelfThenReceive() throws {
        let comm = SingleProcessCommunicator()
        let message: [UInt8] = Array(0..<200)
        var send = try message.withUnsafeBytes { try comm.isend($0, to: 0, tag: 3) }
        XCTAssertTrue(comm.test(&send), "a send to self is copied, so it completes at once")

        var received = [UInt8](repeating: 0, count: 256)
        try received.withUnsafeMutableBytes { buffer in
            var receive = try comm.irecv(into: buffer, from: 0, tag: 3)
            comm.wait(&receive)
            XCTAssertTrue(receive.isComplete)
            XCTAssertEqual(receive.byteCount, 200, "a shorter message reports its own length")
        }
        XCTAssertEqual(Array(received[..<200]), message)
        XCTAssertEqual(received[200...].allSatisfy { $0 == 0 }, true)
        XCTAssertEqual(
            [comm.bytesSent, comm.messagesSent, comm.bytesReceived, comm.messagesReceived], [200, 1, 200, 1])
    }

    func testReceivePostedBeforeSendCompletesWhenTheSendArrives() throws {
        let comm = SingleProcessCommunicator()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4, alignment: 8)
        defer { buffer.deallocate() }
        var receive = try comm.irecv(into: buffer, from: 0, tag: 1)
        XCTAssertFalse(comm.test(&receive))
        XCTAssertEqual(comm.messagesReceived, 0)

        let word: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]
        _ = try word.withUnsafeBytes { try comm.isend($0, to: 0, tag: 1) }
        XCTAssertTrue(comm.test(&receive))
        XCTAssertEqual(Array(buffer), word)
        XCTAssertEqual(comm.messagesReceived, 1)
        XCTAssertTrue(comm.test(&receive), "testing a complete request again changes nothing")
        XCTAssertEqual(comm.messagesReceived, 1)
    }

    func testMessagesMatchByTagInPostingOrder() throws {
        let comm = SingleProcessCommunicator()
        for (tag, value) in [(7, 1), (8, 2), (7, 3)] as [(Int, UInt8)] {
            _ = try [value].withUnsafeBytes { try comm.isend($0, to: 0, tag: tag) }
        }
        var got = [UInt8]()
        for tag in [8, 7, 7] {
            var byte: UInt8 = 0
            try withUnsafeMutableBytes(of: &byte) { buffer in
                var receive = try comm.irecv(into: buffer, from: 0, tag: tag)
                comm.wait(&receive)
            }
            got.append(byte)
        }
        XCTAssertEqual(got, [2, 1, 3])
    }

    func testEmptyMessageIsAMessageOfZeroBytes() throws {
        let comm = SingleProcessCommunicator()
        var send = try comm.isend(UnsafeRawBufferPointer(start: nil, count: 0), to: 0, tag: 0)
        var receive = try comm.irecv(into: UnsafeMutableRawBufferPointer(start: nil, count: 0), from: 0, tag: 0)
        comm.wait(&send)
        comm.wait(&receive)
        XCTAssertEqual(receive.byteCount, 0)
        XCTAssertEqual(
            [comm.bytesSent, comm.messagesSent, comm.bytesReceived, comm.messagesReceived], [0, 1, 0, 1])
    }

    func testRefusedArgumentsThrowAndAreNotCounted() throws {
        let comm = SingleProcessCommunicator()
        let bytes: [UInt8] = [1, 2, 3]
        let cases: [(label: String, peer: Int, tag: Int, function: String)] = [
            ("peer 1 of 1", 1, 0, "MPI_Isend"), ("negative tag", 0, -1, "MPI_Isend"),
            ("tag above 32767", 0, 32768, "MPI_Isend"),
        ]
        for c in cases {
            XCTAssertThrowsError(try bytes.withUnsafeBytes { try comm.isend($0, to: c.peer, tag: c.tag) }, c.label) {
                XCTAssertEqual(($0 as? MPIError)?.function, c.function, c.label)
            }
        }
        // A message longer than the receive buffer is MPI's truncation error.
        _ = try bytes.withUnsafeBytes { try comm.isend($0, to: 0, tag: 5) }
        var small: UInt8 = 0
        try withUnsafeMutableBytes(of: &small) { buffer in
            XCTAssertThrowsError(try comm.irecv(into: buffer, from: 0, tag: 5)) {
                XCTAssertTrue("\($0)".contains("truncated"), "\($0)")
            }
        }
        XCTAssertEqual([comm.messagesSent, comm.messagesReceived], [1, 0])
    }
}

// MARK: - MPICommunicator under mpirun

/// Launches `sparge selftest-communicator` (Sources/sparge/SelfTest.swift), which checks collectives, uneven
/// gathers, a non-blocking ring with empty messages and the exact counters on every rank.
final class MPICommunicatorTests: XCTestCase {
    /// Generous for a run that takes under a second: CI machines are shared, and a hang must still fail.
    let timeout: TimeInterval = 60

    private func assertSelfTestPasses(np: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try mpirun(np: np, ["selftest-communicator"], timeout: timeout)
        let output = "--- stdout\n\(result.stdout)\n--- stderr\n\(result.stderr)"
        XCTAssertEqual(result.status, 0, "\(np) ranks: exit status\n\(output)", file: file, line: line)
        XCTAssertTrue(
            result.stdout.contains("communicator self-test passed on \(np) ranks"), "\(np) ranks:\n\(output)",
            file: file, line: line)
    }

    func testSelfTestOnTwoRanks() throws { try assertSelfTestPasses(np: 2) }
    func testSelfTestOnThreeRanks() throws { try assertSelfTestPasses(np: 3) }
    func testSelfTestOnFourRanks() throws { try assertSelfTestPasses(np: 4) }

    /// Rank 1 fails while ranks 0 and 2 wait in a barrier: all must end non-zero, promptly, with the message.
    func testOneFailingRankEndsEveryRank() throws {
        let start = Date()
        let result = try mpirun(np: 3, ["selftest-communicator", "--fail-rank", "1"], timeout: timeout)
        let elapsed = Date().timeIntervalSince(start)
        let output = "--- stdout\n\(result.stdout)\n--- stderr\n\(result.stderr)"
        XCTAssertNotEqual(result.status, 0, output)
        XCTAssertTrue(
            result.stderr.contains("sparge: error: [rank 1] injected failure on rank 1"), "message missing:\n\(output)")
        XCTAssertFalse(result.stderr.contains("barrier returned"), output)
        XCTAssertLessThan(elapsed, 30, "aborting took \(elapsed) s")
    }
}
