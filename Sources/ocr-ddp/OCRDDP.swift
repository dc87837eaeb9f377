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
        var arguments = Array(CommandLine.arguments.dropFirst())
        for i in arguments.indices where arguments[i] == "--resume" {
            let next = i + 1 < arguments.count ? arguments[i + 1] : nil
            if next == nil || next!.hasPrefix("-") { arguments[i] = "--resume=\(Train.latestCheckpoint)" }
        }
        main(arguments)
    }
}
