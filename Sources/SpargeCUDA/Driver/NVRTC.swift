/// NVRTC, the run-time CUDA C++ compiler, opened with `dlopen`: kernel sources are strings in this package,
/// compiled for the device found at run time.
struct NVRTC {
    typealias Program = UnsafeMutableRawPointer
    typealias Result = Int32

    let library: DynamicLibrary
    let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Result
    let nvrtcGetErrorString: @convention(c) (Result) -> UnsafePointer<CChar>?
    let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<Program?>, UnsafePointer<CChar>, UnsafePointer<CChar>?,
                                            Int32, UnsafePointer<UnsafePointer<CChar>?>?,
                                            UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program?>) -> Result
    let nvrtcCompileProgram: @convention(c) (Program?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    let nvrtcGetProgramLogSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Result
    let nvrtcGetProgramLog: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Result
    let nvrtcGetCUBINSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Result
    let nvrtcGetCUBIN: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Result

    /// `NVRTC_ERROR_COMPILATION`: the source was rejected; the log says why.
    static let compilationError: Result = 6

    /// The names tried, in order: `options.nvrtcPath` when set, the loader's search path, then the toolkit
    /// folders of `options` and the usual ones (`/usr/local/cuda`).
    static func candidates(options: CUDAOptions) -> [String] {
        var names: [String] = []
        if let path = options.nvrtcPath, !path.isEmpty { names.append(path) }
        let versions = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
        names += versions
        var folders: [String] = []
        for home in options.toolkitFolders where !home.isEmpty { folders.append(home + "/lib64") }
        folders += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"]
        for folder in folders { names += versions.map { "\(folder)/\($0)" } }
        return names
    }

    init(options: CUDAOptions) throws {
        let lib = try DynamicLibrary.open(Self.candidates(options: options), what: "NVRTC (libnvrtc)")
        library = lib
        nvrtcVersion = try lib.symbol("nvrtcVersion")
        nvrtcGetErrorString = try lib.symbol("nvrtcGetErrorString")
        nvrtcCreateProgram = try lib.symbol("nvrtcCreateProgram")
        nvrtcDestroyProgram = try lib.symbol("nvrtcDestroyProgram")
        nvrtcCompileProgram = try lib.symbol("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try lib.symbol("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try lib.symbol("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try lib.symbol("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try lib.symbol("nvrtcGetCUBIN")
    }

    /// NVRTC's version as "major.minor".
    var version: String {
        var major: Int32 = 0, minor: Int32 = 0
        return nvrtcVersion(&major, &minor) == 0 ? "\(major).\(minor)" : "unknown"
    }

    func check(_ result: Result, _ call: String) throws {
        guard result != 0 else { return }
        let text = nvrtcGetErrorString(result).map { String(cString: $0) } ?? "NVRTC error"
        throw CUDAError.nvrtc(call: call, code: result, message: text)
    }

    /// Compiles `source` to a cubin for `--gpu-arch=sm_XY`.
    ///
    /// - Parameters:
    ///   - source: CUDA C++ with `extern "C"` kernels (no includes: NVRTC needs no toolkit headers for it).
    ///   - name: the program's name in NVRTC's messages.
    ///   - options: NVRTC options (the architecture, `-D` defines).
    /// - Returns: the cubin and NVRTC's log (warnings; empty when clean).
    /// - Throws: `CUDAError.compile` with the log when the source is rejected.
    func compile(source: String, name: String, options: [String]) throws -> (cubin: [UInt8], log: String) {
        var program: Program?
        try check(nvrtcCreateProgram(&program, source, name, 0, nil, nil), "nvrtcCreateProgram")
        defer { _ = nvrtcDestroyProgram(&program) }
        let cOptions = options.map { strdupPointer($0) }
        defer { cOptions.forEach { $0.deallocate() } }
        let status = cOptions.map { UnsafePointer($0) as UnsafePointer<CChar>? }.withUnsafeBufferPointer {
            nvrtcCompileProgram(program, Int32(options.count), $0.baseAddress)
        }
        var logSize = 0
        try check(nvrtcGetProgramLogSize(program, &logSize), "nvrtcGetProgramLogSize")
        var logBytes = [CChar](repeating: 0, count: max(1, logSize))
        try check(nvrtcGetProgramLog(program, &logBytes), "nvrtcGetProgramLog")
        let log = String(decoding: logBytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if status == Self.compilationError {
            throw CUDAError.compile(kernel: name, options: options, log: log)
        }
        try check(status, "nvrtcCompileProgram")
        var size = 0
        try check(nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize")
        var cubin = [CChar](repeating: 0, count: size)
        try check(nvrtcGetCUBIN(program, &cubin), "nvrtcGetCUBIN")
        return (cubin.map { UInt8(bitPattern: $0) }, log)
    }
}

/// A NUL-terminated copy of `s` that the caller deallocates.
private func strdupPointer(_ s: String) -> UnsafeMutablePointer<CChar> {
    let utf8 = Array(s.utf8)
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count + 1)
    for (i, b) in utf8.enumerated() { p[i] = CChar(bitPattern: b) }
    p[utf8.count] = 0
    return p
}
