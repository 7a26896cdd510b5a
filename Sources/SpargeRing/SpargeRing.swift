@_exported import SpargeKernels
