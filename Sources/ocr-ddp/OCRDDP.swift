import ArgumentParser
import Foundation

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
        subcommands: [Train.self, Eval.self, Predict.self, MakeSynthetic.self, Bench.self, BenchConvs.self,
                      DDPCheck.self])

    /// `--resume` takes an optional value (`--resume` = the newest checkpoint of the work dir, `--resume DIR` = that
    /// one), which the parser cannot express; a bare `--resume` becomes `--resume=@latest` before parsing.
    static func main() {
        shortenBLASSpinning()
        var arguments = Array(CommandLine.arguments.dropFirst())
        for i in arguments.indices where arguments[i] == "--resume" {
            let next = i + 1 < arguments.count ? arguments[i + 1] : nil
            if next == nil || next!.hasPrefix("-") { arguments[i] = "--resume=\(Train.latestCheckpoint)" }
        }
        main(arguments)
    }

    /// OpenBLAS's idle threads spin for about 2^28 cycles (~0.1 s) after each GEMM before they sleep, and the
    /// library reads that timeout only when it loads. Our own parallel kernels (batch norm, im2col, losses) run
    /// between the GEMMs on the same cores and lose cycles to the spinning (measured on 2 cores, R18-D8 256² batch 2:
    /// 1.22–1.54 img/s with the default, 1.53–1.65 with a short timeout). Unless the user set
    /// OPENBLAS_THREAD_TIMEOUT, the process re-executes itself once with a short one, before anything else starts.
    static func shortenBLASSpinning() {
        guard ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"] == nil else { return }
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Not reached unless exec failed: run on with OpenBLAS's default.
    }
}
