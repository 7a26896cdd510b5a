import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One CUDA device of this process: its primary context, one stream, and the kernels compiled for it.
///
/// `CUDADevice.open()` opens the driver and NVRTC once per process and keeps one instance per device
/// ordinal; kernels are compiled by NVRTC for the device's compute capability (`--gpu-arch=sm_XY`) the first
/// time they are asked for and cached for the life of the process. All work goes to one stream in order, so
/// a caller synchronizes only where it reads results.
///
/// Several processes (ranks) may share one device: each gets its own context handle on the primary context.
public final class CUDADevice: @unchecked Sendable {
    /// Device ordinal.
    public let ordinal: Int
    /// The device's name (`NVIDIA H100 80GB HBM3`).
    public let name: String
    /// Compute capability major and minor (9 and 0 for Hopper).
    public let computeCapability: (major: Int, minor: Int)
    /// Streaming multiprocessors.
    public let multiprocessors: Int
    /// The most shared memory one block may ask for, in bytes (after raising the kernel's limit).
    public let sharedMemoryPerBlock: Int
    /// The driver's CUDA version ("13.0") and where the library was found.
    public let driverVersion: String, driverPath: String
    /// NVRTC's version and where it was found.
    public let nvrtcVersion: String, nvrtcPath: String

    let api: DriverAPI
    let nvrtc: NVRTC
    let context: UnsafeMutableRawPointer?
    /// The stream kernels run on, and the one host-to-device copies of staged blocks run on (so that a copy
    /// overlaps the kernel before it; an event orders the kernel after its copy).
    let stream: UnsafeMutableRawPointer?
    let copyStream: UnsafeMutableRawPointer?
    /// A stream for kernels that run beside the main stream's (V's conversion for P·V beside the block
    /// summaries), at the lowest priority: its thread blocks take the SMs the main stream leaves. Its work
    /// is ordered after the main stream's queued work (`orderAfterQueuedWork`: the buffers the pool hands
    /// out may have been used there), and the main stream waits for an event before it uses the output.
    /// Buffers a side kernel touches must outlive that wait. (Being a blocking stream it is also ordered with
    /// the legacy stream's memsets and copies: a `zeroed` buffer made while side work runs waits for it.)
    let sideStream: UnsafeMutableRawPointer?
    /// Allocations given back by this device's buffers, for reuse.
    let pool: DeviceMemoryPool
    /// Pinned host buffers given back, for reuse (up to 1 GiB).
    let pinnedPool: DeviceMemoryPool
    private let functions = Mutex<[String: CUDAFunction]>([:])
    private let modules = Mutex<[String: (UnsafeMutableRawPointer?, String)]>([:])
    private let staging = Mutex<StagedTransfer?>(nil)
    /// Pinned copies that small uploads read from, held until a synchronize shows the stream past them.
    private let uploadsInFlight = Mutex<(buffers: [PinnedBuffer], bytes: Int)>(([], 0))

    private static let opened = Mutex<[Int: CUDADevice]>([:])
    private static let apis = Mutex<(DriverAPI, NVRTC)?>(nil)

    /// The device this process should use: `ordinal`, else `options.deviceOrdinal`, else the process's
    /// rank on its node (`options.localRank`) modulo the device count, so that the ranks of a node spread
    /// over its GPUs and several ranks may share one. The libraries are looked for where `options` says
    /// first (loaded once per process).
    ///
    /// - Throws: `CUDAError` when the driver or NVRTC cannot be loaded, or there is no device.
    public static func open(ordinal: Int? = nil, options: CUDAOptions = CUDAOptions()) throws -> CUDADevice {
        let (api, nvrtc) = try apis.withLock { loaded -> (DriverAPI, NVRTC) in
            if let loaded { return loaded }
            let api = try DriverAPI(options: options)
            try api.check(api.cuInit(0), "cuInit")
            let nvrtc = try NVRTC(options: options)
            loaded = (api, nvrtc)
            return (api, nvrtc)
        }
        var count: Int32 = 0
        try api.check(api.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard count > 0 else { throw CUDAError.noDevice("the driver loaded (\(api.library.path)) but reports no device") }
        let chosen = ordinal ?? options.device(among: Int(count))
        guard chosen >= 0 && chosen < count else {
            throw CUDAError.noDevice("device \(chosen) asked for, but there are \(count) (0…\(count - 1))")
        }
        return try opened.withLock { devices in
            if let device = devices[chosen] { return device }
            let device = try CUDADevice(api: api, nvrtc: nvrtc, ordinal: chosen)
            devices[chosen] = device
            return device
        }
    }

    private init(api: DriverAPI, nvrtc: NVRTC, ordinal: Int) throws {
        self.api = api
        self.nvrtc = nvrtc
        self.ordinal = ordinal
        var device: Int32 = 0
        try api.check(api.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet(\(ordinal))")
        var nameBytes = [CChar](repeating: 0, count: 256)
        try api.check(api.cuDeviceGetName(&nameBytes, 256, device), "cuDeviceGetName")
        name = String(decoding: nameBytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        func attribute(_ a: Int32, _ label: String) throws -> Int {
            var value: Int32 = 0
            try api.check(api.cuDeviceGetAttribute(&value, a, device), "cuDeviceGetAttribute(\(label))")
            return Int(value)
        }
        computeCapability = (try attribute(DriverAPI.attributeComputeCapabilityMajor, "compute capability major"),
                             try attribute(DriverAPI.attributeComputeCapabilityMinor, "compute capability minor"))
        multiprocessors = try attribute(DriverAPI.attributeMultiprocessorCount, "multiprocessor count")
        sharedMemoryPerBlock = try attribute(DriverAPI.attributeMaxSharedMemoryPerBlockOptin, "shared memory per block")
        var version: Int32 = 0
        try api.check(api.cuDriverGetVersion(&version), "cuDriverGetVersion")
        driverVersion = "\(version / 1000).\(version % 1000 / 10)"
        driverPath = api.library.path
        nvrtcVersion = nvrtc.version
        nvrtcPath = nvrtc.library.path
        var ctx: UnsafeMutableRawPointer?
        try api.check(api.cuDevicePrimaryCtxRetain(&ctx, device), "cuDevicePrimaryCtxRetain")
        context = ctx
        try api.check(api.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        var s: UnsafeMutableRawPointer?
        // Blocking streams (flags 0): the synchronous copies and memsets, which run on the legacy default
        // stream, stay ordered with the kernels of these. The main and copy streams at the highest priority
        // (the default is the lowest), the side stream at the lowest.
        var (least, greatest): (Int32, Int32) = (0, 0)
        try api.check(api.cuCtxGetStreamPriorityRange(&least, &greatest), "cuCtxGetStreamPriorityRange")
        try api.check(api.cuStreamCreateWithPriority(&s, 0, greatest), "cuStreamCreateWithPriority")
        stream = s
        var c: UnsafeMutableRawPointer?
        try api.check(api.cuStreamCreateWithPriority(&c, 0, greatest), "cuStreamCreateWithPriority")
        copyStream = c
        var side: UnsafeMutableRawPointer?
        try api.check(api.cuStreamCreateWithPriority(&side, 0, least), "cuStreamCreateWithPriority")
        sideStream = side
        var (free, total) = (0, 0)
        try api.check(api.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        // An eighth of the device: a million-token pass on one GPU reuses all it allocates, and several
        // ranks sharing a GPU still leave it most of its memory.
        pool = DeviceMemoryPool(limit: total / 8)
        pinnedPool = DeviceMemoryPool(limit: 1 << 30)
    }

    /// One line for logs: name, compute capability, multiprocessors, driver and NVRTC versions.
    public var summary: String {
        "device \(ordinal): \(name), sm_\(computeCapability.major)\(computeCapability.minor), \(multiprocessors) SMs, "
            + "driver CUDA \(driverVersion) (\(driverPath)), NVRTC \(nvrtcVersion) (\(nvrtcPath))"
    }

    /// Binds this device's context to the calling thread (each driver call acts on the current context).
    func makeCurrent() throws {
        try api.check(api.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    }

    /// The kernel `name` of `source` compiled with `defines`, compiling on first use (cached per process).
    ///
    /// - Parameters:
    ///   - source: CUDA C++ source holding `extern "C" __global__ void name(…)`.
    ///   - program: the source's name in NVRTC messages.
    ///   - name: the kernel's name.
    ///   - defines: macros that specialize the source (tile shapes, element types); one module is compiled
    ///     per set of defines, and every kernel of it is taken from that module.
    ///   - sharedBytes: dynamic shared memory the kernel will be launched with; above 48 KB the kernel's
    ///     limit is raised (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`).
    ///   - architectureSuffix: appended to the device's `sm_XY` (`"a"`: the architecture-specific target
    ///     that Hopper's `wgmma` and `setmaxnreg` need).
    func function(source: String, program: String, name: String, defines: [(String, Int)],
                  sharedBytes: Int = 0, architectureSuffix: String = "") throws -> CUDAFunction {
        let arch = "--gpu-architecture=sm_\(computeCapability.major)\(computeCapability.minor)\(architectureSuffix)"
        let options = [arch, "--std=c++17", "--generate-line-info"] + defines.map { "--define-macro=\($0.0)=\($0.1)" }
        let moduleKey = "\(program) \(options.joined(separator: " "))"
        let key = "\(name) [\(defines.map { "\($0.0)=\($0.1)" }.joined(separator: " "))] smem=\(sharedBytes)"
        if let cached = functions.withLock({ $0[key] }) { return cached }
        try makeCurrent()
        let module = try modules.withLock { cache -> (UnsafeMutableRawPointer?, String) in
            if let m = cache[moduleKey] { return m }
            let (cubin, log) = try nvrtc.compile(source: source, name: program, options: options)
            var module: UnsafeMutableRawPointer?
            try cubin.withUnsafeBytes {
                try api.check(api.cuModuleLoadData(&module, $0.baseAddress!), "cuModuleLoadData(\(program))")
            }
            cache[moduleKey] = (module, log)
            return (module, log)
        }
        var handle: UnsafeMutableRawPointer?
        try api.check(api.cuModuleGetFunction(&handle, module.0, name), "cuModuleGetFunction(\(name))")
        if sharedBytes > 48 * 1024 {
            guard sharedBytes <= sharedMemoryPerBlock else {
                throw CUDAError.unsupported("\(name) needs \(sharedBytes) bytes of shared memory; the device allows \(sharedMemoryPerBlock)")
            }
            try api.check(api.cuFuncSetAttribute(handle, DriverAPI.functionMaxDynamicSharedSizeBytes, Int32(sharedBytes)),
                          "cuFuncSetAttribute(\(name), max dynamic shared memory \(sharedBytes))")
        }
        var registers: Int32 = 0, local: Int32 = 0
        try api.check(api.cuFuncGetAttribute(&registers, DriverAPI.functionNumRegisters, handle), "cuFuncGetAttribute")
        try api.check(api.cuFuncGetAttribute(&local, DriverAPI.functionLocalSizeBytes, handle), "cuFuncGetAttribute")
        let function = CUDAFunction(handle: handle, name: name, key: key, registers: Int(registers),
                                    localBytes: Int(local), compileLog: module.1)
        functions.withLock { $0[key] = function }
        CUDATrace.say("kernel \(key): \(registers) registers, \(local) B local")
        return function
    }

    /// Every kernel compiled so far, for logs: name, options, registers, local (spill) bytes.
    public var compiledKernels: [String] {
        functions.withLock {
            $0.values.map { f in
                let log = String(f.compileLog.filter { !$0.isNewline }).split(separator: " ").joined(separator: " ")
                return "\(f.key): \(f.registers) registers, \(f.localBytes) B local"
                    + (log.isEmpty ? "" : "; NVRTC says: \(log.prefix(400))")
            }.sorted()
        }
    }

    /// The device's pinned chunks for large transfers (made on first use, kept for the process).
    func stagedTransfer() throws -> StagedTransfer {
        try staging.withLock { cached in
            if let cached { return cached }
            let made = try StagedTransfer(device: self)
            cached = made
            return made
        }
    }

    /// Enqueues `function` on `stream` (default: the main stream).
    func launch(_ function: CUDAFunction, grid: Int, block: Int, sharedBytes: Int = 0, on stream: UnsafeMutableRawPointer? = nil,
                _ arguments: [KernelArgument]) throws {
        guard grid > 0 else { return }
        // Each argument in its own 16-byte-aligned slot (a struct argument takes as many as it needs).
        let slotBytes = arguments.map { ($0.byteCount + 15) / 16 * 16 }
        let slots = UnsafeMutableRawPointer.allocate(byteCount: max(16, slotBytes.reduce(0, +)), alignment: 16)
        defer { slots.deallocate() }
        var pointers = [UnsafeMutableRawPointer?]()
        var at = 0
        for (argument, bytes) in zip(arguments, slotBytes) {
            let slot = slots + at
            switch argument {
            case .pointer(let address): slot.storeBytes(of: address, as: UInt64.self)
            case .int(let value): slot.storeBytes(of: value, as: Int32.self)
            case .int64(let value): slot.storeBytes(of: value, as: Int64.self)
            case .float(let value): slot.storeBytes(of: value, as: Float.self)
            case .double(let value): slot.storeBytes(of: value, as: Double.self)
            case .bytes(let value): value.withUnsafeBytes { slot.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
            pointers.append(slot)
            at += bytes
        }
        try pointers.withUnsafeMutableBufferPointer { p in
            try api.check(api.cuLaunchKernel(function.handle, UInt32(grid), 1, 1, UInt32(block), 1, 1, UInt32(sharedBytes),
                                             stream ?? self.stream, p.baseAddress, nil),
                          "cuLaunchKernel(\(function.name), grid \(grid), block \(block), shared \(sharedBytes) B)")
        }
    }

    /// Waits for everything enqueued so far; while waiting, calls `poll` (when given) instead of blocking.
    func synchronize(poll: (() -> Void)? = nil) throws {
        if let poll {
            while true {
                let status = api.cuStreamQuery(stream)
                if status == 0 { break }
                if status != DriverAPI.notReady { try api.check(status, "cuStreamQuery") }
                poll()
                sched_yield()
            }
        } else {
            try api.check(api.cuStreamSynchronize(stream), "cuStreamSynchronize")
        }
        uploadsInFlight.withLock { $0 = ([], 0) }
    }

    /// Makes `other`'s later work (the copy or the side stream's) wait for everything enqueued on the main
    /// stream so far — not for what is enqueued after. Work there that writes memory the pool handed out
    /// needs it: the memory's last user may be a kernel still queued.
    func orderAfterQueuedWork(_ other: UnsafeMutableRawPointer?) throws {
        let queued = try CUDAEvent(device: self)
        try queued.record()
        try queued.makeWait(other)
    }

    /// Enqueues a copy of `count` bytes from `source` to device address `destination` on the stream: the
    /// bytes go to a pinned buffer first (the caller may reuse `source` on return), and the host does not
    /// wait for the device — a synchronous copy waits for all the stream's work before it, and a pass made
    /// of a dozen small uploads kept the device idle between them. The pinned buffer is held until the
    /// next `synchronize` (which happens first when more than 64 MiB are held).
    func uploadAsync(to destination: UInt64, from source: UnsafeRawPointer, count: Int) throws {
        if uploadsInFlight.withLock({ $0.bytes }) > 64 << 20 { try synchronize() }
        let copy = try PinnedBuffer(device: self, bytes: count)
        copy.pointer.copyMemory(from: source, byteCount: count)
        try api.check(api.cuMemcpyHtoDAsync(destination, copy.pointer, count, stream), "cuMemcpyHtoDAsync(\(count) B)")
        uploadsInFlight.withLock { $0.buffers.append(copy); $0.bytes += copy.bytes }
    }

    /// Free and total device memory in bytes.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        try makeCurrent()
        var free = 0, total = 0
        try api.check(api.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }
}

/// A compiled kernel and what the compiler made of it.
struct CUDAFunction: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer?
    let name: String
    let key: String
    let registers: Int
    let localBytes: Int
    let compileLog: String
}

/// One kernel argument, passed by value.
enum KernelArgument {
    case pointer(UInt64)
    case int(Int32)
    case int64(Int64)
    case float(Float)
    case double(Double)
    /// A struct passed by value: its bytes, laid out as the kernel declares it.
    case bytes([UInt8])

    /// The argument's size.
    var byteCount: Int {
        switch self {
        case .int, .float: 4
        case .pointer, .int64, .double: 8
        case .bytes(let value): value.count
        }
    }

    /// `value` passed by value, its bytes as Swift lays them out (which the caller checks against the kernel's
    /// declaration).
    static func value<T: BitwiseCopyable>(_ value: T) -> KernelArgument {
        .bytes(withUnsafeBytes(of: value) { Array($0) })
    }
}

