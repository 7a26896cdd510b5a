import SpargeKernels
/// i.i.d. standard normal Q, K and V (see `Noise.normal`): every key is as relevant as every other, so
/// attention is near uniform and no sparse method can skip much without error.
struct RandomWorkload: WorkloadModel {
    let shape: WorkloadShape
    let seed: UInt64

    func fill(_ tensor: WorkloadTensor, head: Int, rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let key = Noise.key(seed, NoiseTag.random.rawValue, UInt64(tensor == .query ? 0 : tensor == .key ? 1 : 2),
                            UInt64(head))
        let d = shape.headDim
        Noise.fillNormal(out, count: rows.count * d, key: key, first: UInt64(rows.lowerBound * d), scale: 1)
    }
}
