/// A file that cannot be read or written as asked. The message names the file, and where it applies the
/// tensor and the shapes expected and found.
public struct FormatError: Error, CustomStringConvertible, Equatable {
    /// The file concerned.
    public let path: String
    /// What is wrong with it.
    public let message: String

    public init(path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}
