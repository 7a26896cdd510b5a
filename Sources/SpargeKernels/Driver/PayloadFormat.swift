/// How one key/value block lies in a ring payload: its keys' rows, then what the keys carry besides (an
/// int8 block's scale), then its values' rows — the one description of a block's bytes that the ring's
/// schedule sizes messages by and that both ends of a message lay blocks out by.
///
/// A payload is its entries' blocks back to back (`PayloadEntry.offset`, in entry order). A partial block
/// (the sequence's last) has fewer rows and the same extra bytes. The ring does no arithmetic on what the
/// bytes mean: a backend says what its blocks are (``storage(_:headDim:)`` for K and V in the storage
/// format; the GPU's int8 pass sends K as int8 rows and the block's scale).
public struct PayloadFormat: Sendable, Equatable, CustomStringConvertible {
    /// Bytes of one row of a block's keys.
    public let keyBytesPerRow: Int
    /// Bytes after a block's key rows and before its values (0 unless the keys carry more, such as an int8
    /// block's scale; a multiple of what the backend's kernels need to keep every block aligned).
    public let keyExtraBytes: Int
    /// Bytes of one row of a block's values.
    public let valueBytesPerRow: Int

    public init(keyBytesPerRow: Int, keyExtraBytes: Int = 0, valueBytesPerRow: Int) {
        (self.keyBytesPerRow, self.keyExtraBytes, self.valueBytesPerRow) = (keyBytesPerRow, keyExtraBytes, valueBytesPerRow)
    }

    /// K and V rows of `headDim` elements in `format`, nothing else: what the CPU's ring (and every pass but
    /// the GPU's int8) carries.
    public static func storage(_ format: StorageFormat, headDim: Int) -> PayloadFormat {
        PayloadFormat(keyBytesPerRow: headDim * format.byteSize, valueBytesPerRow: headDim * format.byteSize)
    }

    /// Bytes of a block's keys and their extra: where its values start, from the block's offset.
    public func keyBytes(rows: Int) -> Int { rows * keyBytesPerRow + keyExtraBytes }

    /// Bytes of a block's values.
    public func valueBytes(rows: Int) -> Int { rows * valueBytesPerRow }

    /// Bytes of a whole block of `rows` rows.
    public func blockBytes(rows: Int) -> Int { keyBytes(rows: rows) + valueBytes(rows: rows) }

    public var description: String {
        "K \(keyBytesPerRow) B a row\(keyExtraBytes > 0 ? " + \(keyExtraBytes) B a block" : ""), V \(valueBytesPerRow) B a row"
    }
}
