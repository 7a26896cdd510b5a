/// The CUDA driver API functions this package uses, found with `dlsym` in `libcuda.so.1`.
///
/// This is the one file of raw driver calls (as swift-system keeps its syscalls in one place): each is a
/// `@convention(c)` pointer with the C signature of `cuda.h` (handles are opaque pointers, `CUdeviceptr` is
/// 64 bits, `CUresult` is an `Int32`), and `check` turns every non-zero result into a `CUDAError` that
/// carries the driver's own name and text for it (`cuGetErrorName`, `cuGetErrorString`).
///
/// Versioned names (`cuMemAlloc_v2`, …) are the ones `cuda.h` maps the plain names to since CUDA 3.2; the
/// unversioned exports are the old 32-bit ABI and must not be called.
struct DriverAPI {
    typealias Handle = UnsafeMutableRawPointer
    typealias Result = Int32

    let library: DynamicLibrary

    let cuInit: @convention(c) (UInt32) -> Result
    let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuGetErrorName: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    let cuGetErrorString: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle?>, Int32) -> Result
    let cuCtxSetCurrent: @convention(c) (Handle?) -> Result
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeRawPointer) -> Result
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle?>, Handle?, UnsafePointer<CChar>) -> Result
    let cuFuncSetAttribute: @convention(c) (Handle?, Int32, Int32) -> Result
    let cuFuncGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Handle?) -> Result
    let cuLaunchKernel: @convention(c) (Handle?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Result
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<UInt64>, Int) -> Result
    let cuMemFree: @convention(c) (UInt64) -> Result
    let cuMemHostAlloc: @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int, UInt32) -> Result
    let cuMemFreeHost: @convention(c) (UnsafeMutableRawPointer?) -> Result
    let cuMemcpyHtoD: @convention(c) (UInt64, UnsafeRawPointer, Int) -> Result
    let cuMemcpyDtoH: @convention(c) (UnsafeMutableRawPointer, UInt64, Int) -> Result
    let cuMemcpyHtoDAsync: @convention(c) (UInt64, UnsafeRawPointer, Int, Handle?) -> Result
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, UInt64, Int, Handle?) -> Result
    let cuMemsetD8: @convention(c) (UInt64, UInt8, Int) -> Result
    let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Result
    let cuStreamCreateWithPriority: @convention(c) (UnsafeMutablePointer<Handle?>, UInt32, Int32) -> Result
    let cuCtxGetStreamPriorityRange: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Result
    let cuStreamSynchronize: @convention(c) (Handle?) -> Result
    let cuStreamQuery: @convention(c) (Handle?) -> Result
    let cuEventCreate: @convention(c) (UnsafeMutablePointer<Handle?>, UInt32) -> Result
    let cuEventRecord: @convention(c) (Handle?, Handle?) -> Result
    let cuEventDestroy: @convention(c) (Handle?) -> Result
    let cuEventSynchronize: @convention(c) (Handle?) -> Result
    let cuStreamWaitEvent: @convention(c) (Handle?, Handle?, UInt32) -> Result
    let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Handle?, Handle?) -> Result
    /// Fills a 128-byte `CUtensorMap` for the tensor copy engine (CUDA 12 drivers on); nil where the driver
    /// lacks it, which then keeps Hopper's TMA kernel unused. Arguments: map, data type, rank, address,
    /// sizes, strides (bytes, all but the innermost), box sizes, element strides, interleave, swizzle, L2
    /// promotion, out-of-bounds fill.
    let cuTensorMapEncodeTiled: (@convention(c) (UnsafeMutableRawPointer, Int32, UInt32, UnsafeMutableRawPointer?,
                                                  UnsafePointer<UInt64>, UnsafePointer<UInt64>, UnsafePointer<UInt32>,
                                                  UnsafePointer<UInt32>, Int32, Int32, Int32, Int32) -> Result)?

    /// `CUDA_ERROR_NOT_READY`: what `cuStreamQuery` returns while work is pending (not an error).
    static let notReady: Result = 600

    // CUdevice_attribute values (cuda.h).
    static let attributeMultiprocessorCount: Int32 = 16
    static let attributeComputeCapabilityMajor: Int32 = 75
    static let attributeComputeCapabilityMinor: Int32 = 76
    static let attributeMaxSharedMemoryPerBlockOptin: Int32 = 97
    // CUfunction_attribute values.
    static let functionNumRegisters: Int32 = 4
    static let functionLocalSizeBytes: Int32 = 3
    static let functionMaxDynamicSharedSizeBytes: Int32 = 8

    /// The library names tried for the driver, in order; `options.libcudaPath` comes first when set.
    static func candidates(options: CUDAOptions) -> [String] {
        var names: [String] = []
        if let path = options.libcudaPath, !path.isEmpty { names.append(path) }
        names += ["libcuda.so.1", "libcuda.so", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1",
                  "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"]
        return names
    }

    /// Opens the driver and looks up every function; does not call `cuInit`.
    init(options: CUDAOptions) throws {
        let lib = try DynamicLibrary.open(Self.candidates(options: options), what: "the CUDA driver (libcuda)")
        library = lib
        cuInit = try lib.symbol("cuInit")
        cuDriverGetVersion = try lib.symbol("cuDriverGetVersion")
        cuGetErrorName = try lib.symbol("cuGetErrorName")
        cuGetErrorString = try lib.symbol("cuGetErrorString")
        cuDeviceGetCount = try lib.symbol("cuDeviceGetCount")
        cuDeviceGet = try lib.symbol("cuDeviceGet")
        cuDeviceGetName = try lib.symbol("cuDeviceGetName")
        cuDeviceGetAttribute = try lib.symbol("cuDeviceGetAttribute")
        cuDevicePrimaryCtxRetain = try lib.symbol("cuDevicePrimaryCtxRetain")
        cuCtxSetCurrent = try lib.symbol("cuCtxSetCurrent")
        cuModuleLoadData = try lib.symbol("cuModuleLoadData")
        cuModuleGetFunction = try lib.symbol("cuModuleGetFunction")
        cuFuncSetAttribute = try lib.symbol("cuFuncSetAttribute")
        cuFuncGetAttribute = try lib.symbol("cuFuncGetAttribute")
        cuLaunchKernel = try lib.symbol("cuLaunchKernel")
        cuMemAlloc = try lib.symbol("cuMemAlloc_v2")
        cuMemFree = try lib.symbol("cuMemFree_v2")
        cuMemHostAlloc = try lib.symbol("cuMemHostAlloc")
        cuMemFreeHost = try lib.symbol("cuMemFreeHost")
        cuMemcpyHtoD = try lib.symbol("cuMemcpyHtoD_v2")
        cuMemcpyDtoH = try lib.symbol("cuMemcpyDtoH_v2")
        cuMemcpyHtoDAsync = try lib.symbol("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try lib.symbol("cuMemcpyDtoHAsync_v2")
        cuMemsetD8 = try lib.symbol("cuMemsetD8_v2")
        cuMemGetInfo = try lib.symbol("cuMemGetInfo_v2")
        cuStreamCreateWithPriority = try lib.symbol("cuStreamCreateWithPriority")
        cuCtxGetStreamPriorityRange = try lib.symbol("cuCtxGetStreamPriorityRange")
        cuStreamSynchronize = try lib.symbol("cuStreamSynchronize")
        cuStreamQuery = try lib.symbol("cuStreamQuery")
        cuEventCreate = try lib.symbol("cuEventCreate")
        cuEventRecord = try lib.symbol("cuEventRecord")
        cuEventDestroy = try (try? lib.symbol("cuEventDestroy_v2")) ?? lib.symbol("cuEventDestroy")
        cuEventSynchronize = try lib.symbol("cuEventSynchronize")
        cuStreamWaitEvent = try lib.symbol("cuStreamWaitEvent")
        // CUDA 12.8 added a _v2 with the same signature; cuda.h of CUDA 13 maps the plain name to it.
        cuEventElapsedTime = try lib.optionalSymbol("cuEventElapsedTime_v2") ?? lib.symbol("cuEventElapsedTime")
        cuTensorMapEncodeTiled = lib.optionalSymbol("cuTensorMapEncodeTiled")
    }

    /// Throws the driver's name and text for `result` unless it is `CUDA_SUCCESS`.
    func check(_ result: Result, _ call: @autoclosure () -> String) throws {
        guard result != 0 else { return }
        var name: UnsafePointer<CChar>?
        var text: UnsafePointer<CChar>?
        _ = cuGetErrorName(result, &name)
        _ = cuGetErrorString(result, &text)
        throw CUDAError.driver(call: call(), code: result, name: name.map { String(cString: $0) } ?? "CUDA_ERROR_\(result)",
                               message: text.map { String(cString: $0) } ?? "unknown error")
    }
}
