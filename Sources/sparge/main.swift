import SpargeRing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Placeholder until the command dispatcher lands; keep the `selftest-communicator` hook (used by the tests).
let arguments = CommandLine.arguments
if arguments.count > 1 && arguments[1] == "selftest-communicator" {
    exit(runCommunicatorSelfTest(arguments: Array(arguments.dropFirst(2))))
}
print("usage: sparge <command> [options]   (commands: run, bench, verify; not built yet)")
