import ArgumentParser
import OCRTrain

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw loss (total, aux, ocr), learning rate and val mIoU against iteration from WORK_DIR/log.jsonl into a PNG.")

    @Argument(help: "Work directory of a training run.") var workDir: String
    @Option(help: "Output PNG (default: WORK_DIR/curves.png, which training also writes after every evaluation).")
    var out: String?

    func run() throws {
        let out = out ?? "\(workDir)/curves.png"
        try TrainingCurves.write(logFile: "\(workDir)/log.jsonl", to: out)
        print("wrote \(out)")
    }
}
