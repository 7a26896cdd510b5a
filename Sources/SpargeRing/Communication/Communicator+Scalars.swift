extension Communicator {
    /// The largest `value` over all ranks. The corresponding MPI function is `MPI_Allreduce` with `MPI_MAX`.
    public func allreduceMax(_ value: Double) -> Double {
        var values = [value]
        allreduceMax(&values)
        return values[0]
    }
}
