/// An argument a library call cannot work with; the message names the argument, the tensor and the shapes.
///
/// The library throws it where a caller's input is wrong (it never stops the process for that); a
/// distributed call raises it on every rank together (see `ShardedAttention.forward`).
public enum SpargeError: Error, CustomStringConvertible, Equatable {
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .invalidArgument(let message): message
        }
    }
}
