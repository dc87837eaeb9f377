import ArgumentParser
import Foundation
import Logging
import OCRTensor
import OCRTrain

@main
struct OCRDDP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ocr-ddp",
        abstract: "Distributed data-parallel OCRNet semantic segmentation training on CPU clusters (MPI).",
        discussion: """
            Every command runs the same as one process or under `mpirun -n P` / `srun`. Start with:
              ocr-ddp train                      quick start: synthetic data, built-in config, work dir work_dirs/quickstart
              mpirun -n 4 ocr-ddp train CONFIG --work-dir DIR
              ocr-ddp eval CONFIG DIR/iter_N
            """,
        subcommands: [Train.self, Eval.self, Predict.self, Plot.self, MakeSynthetic.self, Bench.self, BenchConvs.self, BenchAllreduce.self,
                      DDPCheck.self])

    /// `--resume` takes an optional value (`--resume` = the newest checkpoint of the work dir, `--resume DIR` = that
    /// one), which the parser cannot express; a bare `--resume` becomes `--resume=@latest` before parsing.
    static func main() {
        tuneOpenBLAS()
        LoggingSystem.bootstrap(ConsoleLogHandler.init)
        var arguments = Array(CommandLine.arguments.dropFirst())
        for i in arguments.indices where arguments[i] == "--resume" {
            let next = i + 1 < arguments.count ? arguments[i + 1] : nil
            if next == nil || next!.hasPrefix("-") { arguments[i] = "--resume=\(Train.latestCheckpoint)" }
        }
        main(arguments)
    }

    /// Two OpenBLAS settings are read only when the library loads, so the process re-executes itself once with
    /// them, before anything else starts, unless the user set them:
    /// - OPENBLAS_THREAD_TIMEOUT: idle BLAS threads spin for about 2^28 cycles (~0.1 s) after each GEMM before they
    ///   sleep, taking cycles from our own parallel kernels (batch norm, im2col, losses) between the GEMMs (measured
    ///   on 2 cores, R18-D8 256² batch 2: 1.22–1.54 img/s with the default, 1.53–1.65 with a short timeout).
    /// - OPENBLAS_CORETYPE: OpenBLAS 0.3.21 (Debian 12) falls back to its SSE3 "Prescott" kernels on CPUs newer than
    ///   it knows, such as Sapphire/Emerald Rapids; on an AVX-512 CPU its SkylakeX kernels are right (measured on an
    ///   Emerald Rapids VM, R18-D8 256² batch 2: 0.60–0.64 img/s with Prescott, 1.15–1.71 with SkylakeX).
    static func tuneOpenBLAS() {
        let env = ProcessInfo.processInfo.environment
        var changed = false
        if env["OPENBLAS_THREAD_TIMEOUT"] == nil {
            setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1)
            changed = true
        }
        if env["OPENBLAS_CORETYPE"] == nil && BLAS.coreName == "Prescott" && cpuHasAVX512 {
            setenv("OPENBLAS_CORETYPE", "SkylakeX", 1)
            changed = true
        }
        guard changed else { return }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Not reached unless exec failed: run on with OpenBLAS's defaults.
    }

    /// The AVX-512 subsets OpenBLAS's SkylakeX kernels use (F, BW, DQ, VL), from /proc/cpuinfo (Linux).
    static var cpuHasAVX512: Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        let present = Set(flags.split(separator: " ").map(String.init))
        return ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(present.contains)
    }
}
