import ArgumentParser
import Foundation
import OCRData

/// `ocr-ddp make-synthetic OUT_DIR [--train N] [--val N] [--seed S]`: the built-in dataset (docs/DATA.md), written in the
/// Cityscapes layout so it goes through the same file path, decoding and pipeline as real data.
struct MakeSynthetic: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "make-synthetic",
        abstract: "Write the synthetic street-scene dataset (Cityscapes layout, 128×256 images) to OUT_DIR.")

    @Argument(help: "Directory to create the dataset in (must not already hold leftImg8bit/ or gtFine/).")
    var outDir: String

    @Option(help: "Number of training images.")
    var train: Int = SyntheticDataset.defaultTrainCount

    @Option(help: "Number of validation images.")
    var val: Int = SyntheticDataset.defaultValCount

    @Option(help: "Seed: the same seed writes the same dataset.")
    var seed: UInt64 = 0

    func validate() throws {
        guard train > 0, val > 0 else { throw ValidationError("--train and --val must be positive") }
    }

    func run() throws {
        let start = Date()
        // A DataError reaches the user as one line naming the directory and the problem.
        try SyntheticDataset.write(to: outDir, train: train, val: val, seed: seed)
        print(String(format: "wrote %d train + %d val images (%d classes) to %@ in %.1f s", train, val,
                     SyntheticDataset.classes.count, outDir, Date().timeIntervalSince(start)))
    }
}
