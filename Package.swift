// swift-tools-version:6.0
import PackageDescription

// Layers from the metal up (see README "Layout"): OCRTensor → OCRNN → OCRModel; OCRDistributed is the only module
// that knows MPI, and the NN layers reach it only through the `ReplicaReducer` protocol they own.
// `numeric` (-Ounchecked: no bounds, overflow or precondition checks) is for the kernels alone, which run on shapes
// validated before them. Whatever reads input from outside (file formats, images and datasets, configs, trainer
// state, the CLI) is built with every check on: OCRFiles, OCRData, OCRTrain and ocr-ddp.
let numeric: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "ocr-ddp",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ocr-ddp", targets: ["ocr-ddp"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "CSPNG", pkgConfig: "spng", providers: [.apt(["libspng-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        // bf16 GEMM (AMX-BF16, AVX512-BF16 or portable C, chosen at run time by CPUID); its standalone test and
        // microbenchmark are Tools/bf16_kernel.
        .target(name: "COCRBF16", cSettings: [.unsafeFlags(["-O3"], .when(configuration: .release))]),
        // The safetensors format: parsed with checks, every claimed size compared with the bytes present.
        .target(name: "OCRFiles"),
        .target(name: "OCRTensor", dependencies: ["CBLAS", "COCRBF16", "OCRFiles"], swiftSettings: numeric),
        .target(name: "OCRNN", dependencies: ["OCRTensor"], swiftSettings: numeric),
        .target(name: "OCRModel", dependencies: ["OCRNN", "OCRTensor"], swiftSettings: numeric),
        .target(name: "OCRDistributed", dependencies: ["CMPI", "OCRNN", "OCRTensor"], swiftSettings: numeric),
        // Image codecs, datasets, augmentation, sampler and prefetching loader; knows nothing of the model or MPI.
        .target(name: "OCRData", dependencies: ["OCRTensor", "CSPNG", "CTurboJPEG"]),
        .target(name: "OCRTrain", dependencies: ["OCRModel", "OCRNN", "OCRTensor", "OCRDistributed", "OCRData",
                                                 .product(name: "Yams", package: "Yams"),
                                                 .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "ocr-ddp",
            dependencies: [
                "OCRModel", "OCRNN", "OCRTensor", "OCRDistributed", "OCRData", "OCRTrain",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // libFuzzer targets (Launch/fuzz.sh builds them with -sanitize=fuzzer,address); a normal build makes them
        // replayers of the inputs named on their command line (the corpus, the crash regressions).
        .target(name: "CFuzzer", path: "Fuzz/CFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzer"], path: "Fuzz/Support"),
        .executableTarget(name: "fuzz-safetensors", dependencies: ["OCRFiles", "FuzzSupport"], path: "Fuzz/Safetensors"),
        .executableTarget(name: "fuzz-png", dependencies: ["OCRData", "FuzzSupport"], path: "Fuzz/PNG"),
        .executableTarget(name: "fuzz-jpeg", dependencies: ["OCRData", "FuzzSupport"], path: "Fuzz/JPEG"),
        .executableTarget(name: "fuzz-config", dependencies: ["OCRTrain", "FuzzSupport"], path: "Fuzz/Config"),
        .executableTarget(name: "fuzz-trainer-state", dependencies: ["OCRTrain", "FuzzSupport"], path: "Fuzz/TrainerState"),
        // Comparison against PyTorch fixtures and finite differences, shared by the test targets.
        .target(name: "OCRTestSupport", dependencies: ["OCRTensor"], path: "Tests/OCRTestSupport"),
        .testTarget(name: "OCRTensorTests", dependencies: ["OCRTensor", "OCRTestSupport"]),
        .testTarget(name: "OCRNNTests", dependencies: ["OCRNN", "OCRTensor", "OCRTestSupport"]),
        .testTarget(name: "OCRModelTests", dependencies: ["OCRModel", "OCRNN", "OCRTensor", "OCRTestSupport"]),
        .testTarget(name: "OCRDataTests", dependencies: ["OCRData", "OCRTensor", "OCRTestSupport"]),
        // Launch the ocr-ddp executable (under mpirun where they say so).
        .testTarget(name: "DistributedTests", dependencies: ["OCRTensor", "OCRTestSupport", "OCRTrain", "OCRDistributed"]),
        .testTarget(name: "TrainTests", dependencies: ["OCRTrain", "OCRModel", "OCRData", "OCRTensor", "OCRDistributed",
                                                "OCRTestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["OCRData", "OCRTensor", "OCRTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
