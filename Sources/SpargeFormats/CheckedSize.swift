/// Sizes computed from numbers read from a file or a command line, without trapping on overflow.
///
/// A shape such as `[3, 2^62, 4]` is a lie, not a program error: its element count overflows `Int`. These
/// helpers return nil instead, so that the caller can say which file claimed what.
public enum CheckedSize {
    /// The product of `factors`; nil when a factor is negative or the product overflows `Int`.
    public static func product(_ factors: [Int]) -> Int? {
        var result = 1
        for factor in factors {
            guard factor >= 0 else { return nil }
            let (next, overflow) = result.multipliedReportingOverflow(by: factor)
            guard !overflow else { return nil }
            result = next
        }
        return result
    }

    /// The sum of `terms`; nil when a term is negative or the sum overflows `Int`.
    public static func sum(_ terms: [Int]) -> Int? {
        var result = 0
        for term in terms {
            guard term >= 0 else { return nil }
            let (next, overflow) = result.addingReportingOverflow(term)
            guard !overflow else { return nil }
            result = next
        }
        return result
    }

    /// Bytes of an array of `shape` with elements of `elementBytes` bytes; nil on overflow.
    public static func bytes(shape: [Int], elementBytes: Int) -> Int? {
        product(shape + [elementBytes])
    }
}
