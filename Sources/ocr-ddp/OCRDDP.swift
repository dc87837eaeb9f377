import ArgumentParser

@main
struct OCRDDP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ocr-ddp",
        abstract: "Distributed data-parallel OCRNet semantic segmentation training on CPU clusters (MPI).",
        subcommands: [MakeSynthetic.self, BenchConvs.self, DDPCheck.self])
}
