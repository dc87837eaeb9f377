import ArgumentParser
import Foundation
import OCRData
import OCRDistributed
import OCRModel
import OCRTensor
import OCRTrain

/// The model for evaluation or prediction, in eval mode on every rank: rank 0 reads CHECKPOINT (a checkpoint
/// directory or a model.safetensors file) and hands the weights to the others, which need no access to it.
func loadModel(_ experiment: ExperimentConfig, checkpoint: String, comm: Communicator) throws -> OCRNet {
    let model = OCRNet(config: experiment.model, seed: experiment.seed)
    try comm.agreeing("checkpoint load") {
        if comm.isRoot { try loadWeights(into: model, checkpoint: checkpoint) }
    }
    ReplicaConsistency.broadcastState(model.store, comm: comm)
    model.training = false
    return model
}

func loadWeights(into model: OCRNet, checkpoint: String) throws {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: checkpoint, isDirectory: &isDirectory) else {
        throw CheckpointError("\(checkpoint): no such checkpoint")
    }
    let file = isDirectory.boolValue ? "\(checkpoint)/\(CheckpointStore.modelFile)" : checkpoint
    let report = try model.store.loadStateDict(from: SafetensorsFile(path: file))
    guard report.isComplete else { throw CheckpointError("\(file) does not fit the config's model: \(report.summary)") }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a checkpoint on the config's val split: per-class IoU/Acc table, then one JSON line.")

    @Argument(help: "YAML config.") var config: String
    @Argument(help: "Checkpoint directory (WORK_DIR/iter_<N>) or model.safetensors file.") var checkpoint: String
    @Option(help: "Work directory (for the synthetic dataset when it has to be generated).") var workDir: String?
    @Option(help: "Write colour predictions blended with the images here.") var showDir: String?
    @Flag(help: "Cityscapes test-server output instead of scores (mmseg's format_only): one labelIds PNG per image, named <image basename>.png, in --out-dir; labels are not needed.")
    var formatOnly = false
    @Option(help: "Directory for --format-only's PNGs.") var outDir: String?
    @Option(help: "Split to run on (default: the config's data.val_split), e.g. test with --format-only.") var split: String?
    @OptionGroup var augmentation: TestTimeAugmentationOption
    @OptionGroup var options: ConfigOptions

    func validate() throws {
        if formatOnly != (outDir != nil) { throw ValidationError("--format-only and --out-dir go together") }
    }

    func run() throws {
        let experiment = try options.load(config)
        let views = try augmentation.views(experiment)
        if formatOnly && experiment.data.type != .cityscapes {
            throw ValidationError("--format-only writes the Cityscapes test-server format; data.type is \(experiment.data.type.rawValue)")
        }
        try withProcessGroup(timeout: experiment.distTimeout) { comm in
            let model = try loadModel(experiment, checkpoint: checkpoint, comm: comm)
            var data = experiment.data
            data.dataRoot = try Trainer.dataRoot(experiment, workDir: workDir ?? "work_dirs/eval", comm: comm)
            if let split { data.valSplit = split }
            let dataset = try Trainer.agreedDataset(data, split: .val, numClasses: experiment.model.numClasses,
                                                      labelsOptional: formatOnly, comm: comm)
            if let outDir {
                try comm.agreeing("output directory") {
                    if comm.isRoot { try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true) }
                }
            }
            let progress = ProgressReporter(formatOnly ? "format" : "Iter(test)", total: dataset.count, enabled: comm.isRoot)
            guard let counts = try Evaluator(config: experiment, comm: comm).evaluate(model: model, dataset: dataset,
                                                                                      data: data, showDir: showDir,
                                                                                      augmentation: views,
                                                                                      progress: progress,
                                                                                      formatDirectory: outDir),
                  comm.isRoot else { return }
            if let outDir {
                print("wrote \(dataset.count) Cityscapes labelIds PNGs (<image basename>.png) to \(outDir)")
                return
            }
            print(Evaluator.table(counts, classNames: dataset.classes.names))
            let json = try JSONSerialization.data(withJSONObject: Evaluator.jsonObject(counts, classNames: dataset.classes.names),
                                                  options: [.sortedKeys])
            print(String(decoding: json, as: UTF8.self))
        }
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a palette PNG of predicted classes for each given image, as eval predicts them.")

    @Argument(help: "YAML config.") var config: String
    @Argument(help: "Checkpoint directory or model.safetensors file.") var checkpoint: String
    @Argument(help: "Images (PNG or JPEG).") var images: [String]
    @Option(help: "Directory for the <image name>.png predictions.") var outDir: String
    @OptionGroup var augmentation: TestTimeAugmentationOption
    @OptionGroup var options: ConfigOptions

    func validate() throws {
        if images.isEmpty { throw ValidationError("give at least one image") }
    }

    /// Each image goes through the config's test pipeline and test_cfg (whole or slide, flip and scales), or with
    /// `--tta` its tta_pipeline, exactly as in `eval`, and the prediction is taken at the image's own size. Under mpirun the images are dealt out to the
    /// ranks in turn.
    func run() throws {
        let experiment = try options.load(config)
        let views = try augmentation.views(experiment)
        try withProcessGroup(timeout: experiment.distTimeout) { comm in
            let model = try loadModel(experiment, checkpoint: checkpoint, comm: comm)
            let inference = Inference(model: model, config: experiment)
            try comm.agreeing("output directory") {
                if comm.isRoot { try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true) }
            }
            let palette = experiment.data.type.classes.palette
            // Rank 0 reports for everyone: its share advances with the others' (images are dealt out in turn).
            let progress = ProgressReporter("predict", total: images.count, enabled: comm.isRoot)
            try comm.agreeing("prediction") {
                for (index, path) in images.enumerated() where index % comm.size == comm.rank {
                    let image = try ImageCodec.readRGB(path)
                    let probabilities: Tensor
                    if let views {
                        probabilities = inference.probabilities(
                            views: views.views(of: image, normalization: experiment.data.testPipeline.normalization),
                            outHeight: image.height, outWidth: image.width)
                    } else {
                        let input = experiment.data.testPipeline.evaluationInput(image)
                        probabilities = inference.probabilities(input.reshaped([1] + input.shape),
                                                                outHeight: image.height, outWidth: image.width)
                    }
                    let classes = Inference.argmax(probabilities).map { UInt8(clamping: $0) }
                    let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
                    try ImageCodec.writeLabel(LabelImage(width: image.width, height: image.height, values: classes),
                                              to: "\(outDir)/\(name).png", palette: palette)
                    progress.update(done: min((index / comm.size + 1) * comm.size, images.count))
                }
            }
        }
    }
}
