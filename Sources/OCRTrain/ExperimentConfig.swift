import Foundation
import OCRData
import OCRDistributed
import OCRModel
import OCRNN
import OCRTensor

/// Everything a run needs, read from the YAML of docs/INTERFACE.md (key paths are a contract) plus `--cfg-options`.
/// Keys a file leaves out take the defaults below (mmseg's OCRNet R50-D8 Cityscapes recipe); a key that nothing
/// reads is an error naming it.
public struct ExperimentConfig {
    public enum TestMode: Equatable {
        case whole
        case slide(crop: [Int], stride: [Int])
    }

    public var model = ModelConfig()
    public var syncBN = true
    public var testMode = TestMode.whole
    /// Flip and multi-scale test-time augmentation (softmax averaged); empty scales = just 1.0.
    public var testFlip = false
    public var testScales: [Double] = [1.0]
    /// mmseg's `tta_pipeline` (used by `eval --tta` / `predict --tta`, as mmseg's `tools/test.py --tta`).
    public var testTimeAugmentation: TestTimeAugmentation?

    /// The `data:` block (dataset, root, batch size per rank, pipelines, splits, loader workers).
    public var data: DataConfig
    public var learningRate = 0.01
    public var momentum = 0.9
    public var weightDecay = 0.0005
    /// GEMM operand precision of training steps: `optim_wrapper: {type: AmpOptimWrapper, dtype: bfloat16}` (or
    /// `train --amp`) asks for bf16; evaluation is fp32 either way.
    public var precision = Precision.float32
    /// mmengine `optim_wrapper.accumulative_counts`: micro-batches of `data.batch_size` per optimizer step, with
    /// communication only on the last.
    public var accumulation = 1
    public static let maximumAccumulation = 1024
    /// mmengine `auto_scale_lr: {enable: true, base_batch_size: B}`: every learning rate times (global batch / B).
    /// mmengine's global batch is ranks × batch_size; ours counts accumulation too (the batch an optimizer step
    /// averages over). nil when not enabled.
    public var autoScaleBaseBatch: Int?
    /// `param_scheduler`; the default is mmseg's PolyLR(power 0.9, eta_min 1e-4) over the whole run.
    public var schedule = LearningRateSchedule(phases: [])

    public var maxIters = 80000
    public var valInterval = 8000
    public var checkpointInterval = 8000
    public var maxKeep = 3
    public var logInterval = 50
    public var seed: UInt64 = 0
    /// How gradients travel between ranks (`model_wrapper_cfg`: bucket_cap_mb as PyTorch DDP, and our overlap,
    /// gradient_payload and allreduce keys).
    public var gradientCommunication = GradientCommunication()
    /// Seconds a collective may take before the watchdog aborts the job (`env_cfg.dist_cfg.timeout`).
    public var distTimeout = 1800.0
    /// What a failed evaluation during training does after its checkpoint is safe (`train_cfg.on_val_error`).
    public enum ValidationFailure: String { case stop, `continue` }
    public var onValError = ValidationFailure.stop

    /// The tree this config was read from, after overrides (written to WORK_DIR/config.yaml).
    public private(set) var tree: ConfigValue = .map([])

    /// Reads a YAML file (or the built-in quick-start config when `path` is nil) and applies `K=V` overrides.
    public static func load(path: String?, overrides: [String]) throws -> ExperimentConfig {
        var tree: ConfigValue
        if let path {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigError("\(path): cannot read config file")
            }
            tree = try ConfigValue(yaml: text, source: path)
        } else {
            tree = try ConfigValue(yaml: BuiltInConfigs.quickstart, source: "built-in quickstart config")
        }
        for override in overrides {
            guard let eq = override.firstIndex(of: "="), eq != override.startIndex else {
                throw ConfigError("--cfg-options '\(override)': expected KEY=VALUE")
            }
            let key = String(override[..<eq])
            let value = try ConfigValue(yaml: String(override[override.index(after: eq)...]), source: "--cfg-options \(key)")
            try tree.set(key.split(separator: ".").map(String.init), to: value, fullPath: key)
        }
        return try ExperimentConfig(tree: tree)
    }

    public init(tree: ConfigValue) throws {
        let r = ConfigReader(tree)
        self.tree = tree
        try Self.readModelFrame(r)
        switch try r.string("model.backbone.type", default: "ResNetV1c") {
        case "ResNetV1c":
            model.depth = try r.int("model.backbone.depth", default: model.depth)
            model.baseChannels = try r.int("model.backbone.base_channels", default: model.baseChannels)
            // mmseg's stem_channels defaults to 64 whatever base_channels is; ours to base_channels.
            if r.has("model.backbone.stem_channels") {
                model.stemChannels = try r.int("model.backbone.stem_channels", default: model.baseChannels)
            }
            try Self.readResNetFixedKeys(r)
        case "HRNet":
            // mmseg's ocrnet_hr18 defaults (1×1 FCN conv as wide as the concatenation, no dropout); the keys below
            // may still override them.
            model = .hrnet(try Self.hrnet(r))
        case let other:
            throw ConfigError("config key 'model.backbone.type': '\(other)' is not supported (ResNetV1c, HRNet)")
        }
        try r.require("model.backbone.norm_eval", equals: .bool(false), "false (BN layers train)")
        let heads = r.count("model.decode_head")
        if heads != 0 && heads != 2 {
            throw ConfigError("config key 'model.decode_head': OCRNet has 2 heads (FCNHead, OCRHead), got \(heads)")
        }
        // mmseg writes num_classes and align_corners per head; our model-level keys, when given, must agree.
        let headClasses = try (0..<2).map { try r.int("model.decode_head.\($0).num_classes", default: -1) }
        model.numClasses = try r.int("model.num_classes", default: headClasses.first { $0 > 0 } ?? model.numClasses)
        let headCorners = try (0..<2).map { try r.bool("model.decode_head.\($0).align_corners", default: false) }
        model.alignCorners = try r.bool("model.align_corners", default: headCorners[0])
        for i in 0..<2 {
            if headClasses[i] > 0 && headClasses[i] != model.numClasses {
                throw ConfigError("config key 'model.decode_head.\(i).num_classes': \(headClasses[i]) differs from "
                                  + "the model's \(model.numClasses)")
            }
            if headCorners[i] != model.alignCorners {
                throw ConfigError("config key 'model.decode_head.\(i).align_corners': both heads and the model use one "
                                  + "align_corners")
            }
        }
        let classWeights = try r.doubles("model.class_weight", default: nil)?.map { Float($0) }
        // mmseg's norm_cfg per module, SyncBN in its configs (one process: plain BN); our `model.sync_bn` overrides it.
        let normSync = try Self.normIsSync(r, "model.backbone.norm_cfg", default: syncBN)
        syncBN = try r.bool("model.sync_bn", default: normSync)
        for (i, expected) in ["FCNHead", "OCRHead"].enumerated() {
            let p = "model.decode_head.\(i)"
            let type = try r.string("\(p).type", default: expected)
            guard type == expected else { throw ConfigError("config key '\(p).type': expected \(expected), got \(type)") }
            guard try Self.normIsSync(r, "\(p).norm_cfg", default: normSync) == normSync else {
                throw ConfigError("config key '\(p).norm_cfg.type': the heads and the backbone use one kind of BN")
            }
            if let hrnet = model.hrnet {
                // Both heads read resize_concat of the four branches, as mmseg's ocrnet_hr18 writes it.
                guard try r.ints("\(p).in_index", default: [0, 1, 2, 3]) == [0, 1, 2, 3] else {
                    throw ConfigError("config key '\(p).in_index': the HRNet heads read all four branches [0, 1, 2, 3]")
                }
                let transform = try r.string("\(p).input_transform", default: "resize_concat")
                guard transform == "resize_concat" else {
                    throw ConfigError("config key '\(p).input_transform': '\(transform)' is not resize_concat")
                }
                let inChannels = try r.ints("\(p).in_channels", default: hrnet.outChannels)
                guard inChannels == hrnet.outChannels else {
                    throw ConfigError("config key '\(p).in_channels': \(inChannels) are not the branch widths "
                                      + "\(hrnet.outChannels)")
                }
            } else {
                let inIndex = try r.int("\(p).in_index", default: i + 2)
                guard inIndex == i + 2 else {
                    throw ConfigError("config key '\(p).in_index': the ResNet heads read c\(i + 3) (in_index \(i + 2))")
                }
                let width = model.stageChannels[i + 2]
                let inChannels = try r.int("\(p).in_channels", default: width)
                guard inChannels == width else {
                    throw ConfigError("config key '\(p).in_channels': \(inChannels) is not the width of c\(i + 3) "
                                      + "(\(width) for this backbone)")
                }
            }
            // mmseg: dropout_ratio ≤ 0 (its HRNet configs write -1) builds no dropout layer.
            let dropout = Swift.max(0, Float(try r.double("\(p).dropout_ratio", default: 0.1)))
            let loss = try Self.headLoss(r, p, defaultWeight: i == 0 ? 0.4 : 1.0, classWeights: classWeights)
            if i == 0 {
                model.fcnChannels = try r.int("\(p).channels", default: model.fcnChannels)
                let convs = try r.int("\(p).num_convs", default: 1)
                guard convs == 1 else { throw ConfigError("config key '\(p).num_convs': only 1 is supported") }
                model.fcnKernelSize = try r.int("\(p).kernel_size", default: model.fcnKernelSize)
                guard try !r.bool("\(p).concat_input", default: false) else {
                    throw ConfigError("config key '\(p).concat_input': only false is supported")
                }
                model.fcnDropout = dropout; model.auxLoss = loss
            } else {
                model.ocrChannels = try r.int("\(p).channels", default: model.ocrChannels)
                model.ocrMidChannels = try r.int("\(p).ocr_channels", default: model.ocrMidChannels)
                model.ocrDropout = dropout; model.ocrLoss = loss
            }
        }
        model.fcnPasses = try r.int("model.train_cfg.fcn_passes", default: model.fcnPasses)
        switch try r.string("model.test_cfg.mode", default: "whole") {
        case "whole": testMode = .whole
        case "slide":
            let crop = try r.ints("model.test_cfg.crop_size", default: [])
            let stride = try r.ints("model.test_cfg.stride", default: [])
            guard crop.count == 2, stride.count == 2, (crop + stride).allSatisfy({ $0 > 0 }) else {
                throw ConfigError("config key 'model.test_cfg': slide mode needs crop_size [h, w] and stride [h, w]")
            }
            testMode = .slide(crop: crop, stride: stride)
        case let other:
            throw ConfigError("config key 'model.test_cfg.mode': '\(other)' is not whole or slide")
        }
        testTimeAugmentation = try Self.testTimeAugmentation(r)
        testFlip = try r.bool("model.test_cfg.flip", default: false)
        testScales = try r.doubles("model.test_cfg.scales", default: [1.0]) ?? [1.0]
        do { try model.validate() } catch { throw ConfigError("\(error)") }

        guard let block = r.subtree("data")?.plain as? [String: Any] else {
            throw ConfigError("config key 'data': missing (needs at least type and data_root)")
        }
        do { data = try DataConfig(block) } catch { throw ConfigError("config key \(error)") }
        // Batch norm in training needs two values per channel: a batch of one image whose smallest feature map is
        // 1×1 has one (its statistics would be NaN).
        if let pad = data.trainPipeline.padSize {
            let (h, w) = (model.smallestFeatureSide(pad.height), model.smallestFeatureSide(pad.width))
            guard data.batchSize * h * w >= 2 else {
                throw ConfigError("config key 'data.batch_size': \(data.batchSize) image(s) of \(pad.height)×\(pad.width) "
                                  + "give a \(h)×\(w) smallest feature map, one value per channel for batch norm: "
                                  + "use a larger crop or batch")
            }
        }
        // Padded label pixels must be ignored or a real class: any other value would index past the logits.
        let labelPad = Int(data.trainPipeline.labelPadValue)
        guard labelPad == 255 || labelPad < model.numClasses else {
            throw ConfigError("config key 'data.train_pipeline' (Pad seg_pad_val): \(labelPad) is neither 255 (ignored) "
                              + "nor a class below num_classes \(model.numClasses)")
        }

        // mmengine nests the optimizer in optim_wrapper; mmseg's files also keep a top-level copy, and ours use that.
        let optimizerKeys = r.has("optim_wrapper.optimizer") ? ["optim_wrapper.optimizer", "optimizer"] : ["optimizer"]
        for (i, o) in optimizerKeys.enumerated() {
            let optimizerType = try r.string("\(o).type", default: "SGD")
            guard optimizerType == "SGD" else { throw ConfigError("config key '\(o).type': only SGD is supported") }
            let values = (try r.double("\(o).lr", default: learningRate), try r.double("\(o).momentum", default: momentum),
                          try r.double("\(o).weight_decay", default: weightDecay))
            guard i == 0 || values == (learningRate, momentum, weightDecay) else {
                throw ConfigError("config key '\(o)': differs from optim_wrapper.optimizer (give the optimizer once)")
            }
            (learningRate, momentum, weightDecay) = values
        }
        for (key, value, valid) in [("lr", learningRate, learningRate >= 0), ("momentum", momentum, (0..<1).contains(momentum)),
                                    ("weight_decay", weightDecay, weightDecay >= 0)] where !(valid && value.isFinite) {
            throw ConfigError("config key '\(optimizerKeys[0]).\(key)': \(value) is out of range")
        }
        try r.require("optim_wrapper.clip_grad", equals: .null, "null (no gradient clipping)")
        switch try r.string("optim_wrapper.type", default: "OptimWrapper") {
        case "OptimWrapper": precision = .float32
        case "AmpOptimWrapper":
            // mmengine's autocast on CPU defaults to bfloat16; float16 has no fast CPU path and needs loss scaling.
            let dtype = try r.string("optim_wrapper.dtype", default: "bfloat16")
            guard dtype == "bfloat16" else {
                throw ConfigError("config key 'optim_wrapper.dtype': '\(dtype)' is not bfloat16 (the only CPU mixed precision)")
            }
            precision = .bfloat16
            // bf16 has fp32's exponent range, so gradients need no loss scale: mmseg's --amp default 'dynamic' and
            // a fixed scale are both accepted and have no effect.
            if let scale = r.subtree("optim_wrapper.loss_scale"), scale != .string("dynamic") {
                let value = try r.double("optim_wrapper.loss_scale", default: 1)
                guard value > 0 && value.isFinite else {
                    throw ConfigError("config key 'optim_wrapper.loss_scale': must be 'dynamic' or a positive number")
                }
            }
        case let other:
            throw ConfigError("config key 'optim_wrapper.type': '\(other)' is not OptimWrapper or AmpOptimWrapper")
        }
        accumulation = try r.int("optim_wrapper.accumulative_counts", default: 1)
        guard (1...Self.maximumAccumulation).contains(accumulation) else {
            throw ConfigError("config key 'optim_wrapper.accumulative_counts': \(accumulation) is not in "
                              + "1…\(Self.maximumAccumulation)")
        }
        if try r.bool("auto_scale_lr.enable", default: false) {
            let base = try r.int("auto_scale_lr.base_batch_size", default: 0)
            guard base >= 1 else {
                throw ConfigError("config key 'auto_scale_lr.base_batch_size': needs a positive batch size when enabled")
            }
            autoScaleBaseBatch = base
        } else if r.has("auto_scale_lr.base_batch_size") {
            _ = try r.int("auto_scale_lr.base_batch_size", default: 0)   // read, so that it is not an unknown key
        }
        maxIters = try r.int("train_cfg.max_iters", default: maxIters)
        schedule = r.has("param_scheduler") ? try LearningRateSchedule.read(r, maxIters: maxIters)
            : LearningRateSchedule(phases: [.init(rule: .poly(power: 0.9, etaMin: 0.0001), begin: 0, end: maxIters)])
        valInterval = try r.int("train_cfg.val_interval", default: valInterval)
        checkpointInterval = try r.int("checkpoint.interval", default: checkpointInterval)
        maxKeep = try r.int("checkpoint.max_keep", default: maxKeep)
        logInterval = try r.int("log.interval", default: logInterval)
        distTimeout = try r.double("env_cfg.dist_cfg.timeout", default: distTimeout)
        guard distTimeout > 0 && distTimeout.isFinite else {
            throw ConfigError("config key 'env_cfg.dist_cfg.timeout': must be a positive number of seconds")
        }
        gradientCommunication = try Self.readModelWrapper(r)
        let onError = try r.string("train_cfg.on_val_error", default: onValError.rawValue)
        guard let failure = ValidationFailure(rawValue: onError) else {
            throw ConfigError("config key 'train_cfg.on_val_error': '\(onError)' is not stop or continue")
        }
        onValError = failure
        let rawSeed = try r.int("seed", default: 0)
        guard rawSeed >= 0 else { throw ConfigError("config key 'seed': must be ≥ 0") }
        seed = UInt64(rawSeed)
        for (key, value) in [("train_cfg.max_iters", maxIters), ("train_cfg.val_interval", valInterval),
                             ("checkpoint.interval", checkpointInterval), ("log.interval", logInterval),
                             ("checkpoint.max_keep", maxKeep)] where value < 1 {
            throw ConfigError("config key '\(key)': must be ≥ 1, got \(value)")
        }
        if let unknown = r.unknownKeys.first {
            throw ConfigError("unknown config key '\(unknown)'")
        }
    }

    /// mmengine's `model_wrapper_cfg` (the DDP wrapper's arguments): PyTorch DDP's `bucket_cap_mb`, and ours:
    /// `overlap` (polling | thread), `gradient_payload` (fp32 | bf16) and `allreduce` (flat | hierarchical).
    static func readModelWrapper(_ r: ConfigReader) throws -> GradientCommunication {
        try r.require("model_wrapper_cfg.type", equals: .string("MMDistributedDataParallel"), "MMDistributedDataParallel")
        var communication = GradientCommunication()
        func choice<T: RawRepresentable & CaseIterable>(_ key: String, _ fallback: T) throws -> T where T.RawValue == String {
            let value = try r.string("model_wrapper_cfg." + key, default: fallback.rawValue)
            guard let chosen = T(rawValue: value) else {
                throw ConfigError("config key 'model_wrapper_cfg.\(key)': '\(value)' is not "
                                  + T.allCases.map(\.rawValue).joined(separator: " or "))
            }
            return chosen
        }
        communication.overlap = try choice("overlap", communication.overlap)
        communication.payload = try choice("gradient_payload", communication.payload)
        communication.topology = try choice("allreduce", communication.topology)
        let capMB = try r.double("model_wrapper_cfg.bucket_cap_mb", default: 25)
        guard capMB > 0 && capMB <= 1024 else {
            throw ConfigError("config key 'model_wrapper_cfg.bucket_cap_mb': \(capMB) is not in (0, 1024] MB")
        }
        communication.bucketBytes = Int(capMB * 1024 * 1024)
        return communication
    }

    /// The segmentor around the backbone as mmseg writes it: a two-stage CascadeEncoderDecoder. `pretrained` names
    /// mmseg's ImageNet weights, which arrive here through `--load-from` (README); it is recorded, not fetched.
    static func readModelFrame(_ r: ConfigReader) throws {
        try r.require("model.type", equals: .string("CascadeEncoderDecoder"), "CascadeEncoderDecoder")
        try r.require("model.num_stages", equals: .int(2), "2 (FCN head, then OCR head)")
        _ = try r.string("model.pretrained", default: "")
        // mmseg writes `train_cfg=dict()`; our one key in it is fcn_passes, read with the heads.
        if r.root[["model", "train_cfg"]] == .map([]) { _ = r.subtree("model.train_cfg") }
    }

    /// ResNetV1c keys mmseg's OCRNet configs write, at the one value our ResNetV1c-D8 implements.
    static func readResNetFixedKeys(_ r: ConfigReader) throws {
        let b = "model.backbone"
        func ints(_ values: [Int]) -> ConfigValue { .list(values.map { .int($0) }) }
        try r.require("\(b).num_stages", equals: .int(4), "4")
        try r.require("\(b).out_indices", equals: ints([0, 1, 2, 3]), "[0, 1, 2, 3]")
        try r.require("\(b).strides", equals: ints([1, 2, 1, 1]), "[1, 2, 1, 1] (output stride 8)")
        try r.require("\(b).dilations", equals: ints([1, 1, 2, 4]), "[1, 1, 2, 4] (output stride 8)")
        try r.require("\(b).style", equals: .string("pytorch"), "pytorch (stride on the 3×3 conv)")
        try r.require("\(b).contract_dilation", equals: .bool(true), "true")
    }

    /// Whether a `norm_cfg` block asks for SyncBN (mmseg's configs) or BN; absent gives `fallback`.
    static func normIsSync(_ r: ConfigReader, _ path: String, default fallback: Bool) throws -> Bool {
        try r.require("\(path).requires_grad", equals: .bool(true), "true (BN affine parameters train)")
        switch try r.string("\(path).type", default: fallback ? "SyncBN" : "BN") {
        case "SyncBN": return true
        case "BN", "BN2d": return false
        case let other: throw ConfigError("config key '\(path).type': '\(other)' is not SyncBN or BN")
        }
    }

    /// A head's loss: `loss_decode` (mmseg's CrossEntropyLoss keys) or our shorthand `loss_weight`, and `sampler`.
    static func headLoss(_ r: ConfigReader, _ head: String, defaultWeight: Float, classWeights: [Float]?) throws
        -> HeadLoss {
        let d = "\(head).loss_decode"
        if case .list? = r.subtree(d) {
            throw ConfigError("config key '\(d)': one CrossEntropyLoss per head is supported, not a list")
        }
        if r.has(d) && r.has("\(head).loss_weight") {
            throw ConfigError("config key '\(head).loss_weight': give the weight once, in \(d).loss_weight")
        }
        let type = try r.string("\(d).type", default: "CrossEntropyLoss")
        guard type == "CrossEntropyLoss" else {
            throw ConfigError("config key '\(d).type': '\(type)' is not CrossEntropyLoss")
        }
        try r.require("\(d).use_sigmoid", equals: .bool(false), "false (softmax cross-entropy)")
        try r.require("\(d).use_mask", equals: .bool(false), "false")
        try r.require("\(d).reduction", equals: .string("mean"), "mean")
        try r.require("\(d).loss_name", equals: .string("loss_ce"), "loss_ce")
        var loss = HeadLoss(weight: Float(try r.double("\(d).loss_weight",
                                                        default: try r.double("\(head).loss_weight",
                                                                              default: Double(defaultWeight)))))
        loss.classWeights = try r.doubles("\(d).class_weight", default: nil)?.map { Float($0) } ?? classWeights
        loss.averageOverNonIgnored = try r.bool("\(d).avg_non_ignore", default: false)
        let s = "\(head).sampler"
        if r.has(s) {
            let type = try r.string("\(s).type", default: "")
            guard type == "OHEMPixelSampler" else {
                throw ConfigError("config key '\(s).type': '\(type)' is not OHEMPixelSampler")
            }
            let threshold = try r.double("\(s).thresh", default: .nan)
            loss.sampler = HardPixelSampler(threshold: threshold.isNaN ? nil : Float(threshold),
                                            minKept: try r.int("\(s).min_kept", default: 100000))
        }
        return loss
    }

    /// `tta_pipeline` as mmseg writes it: [LoadImageFromFile, TestTimeAug(transforms: [[Resize(scale_factor=r,
    /// keep_ratio=True)…], [RandomFlip(prob=0 or 1)…], [LoadAnnotations], [PackSegInputs]])]; `tta_model:
    /// {type: SegTTAModel}` (softmax averaged over the views).
    static func testTimeAugmentation(_ r: ConfigReader) throws -> TestTimeAugmentation? {
        try r.require("tta_model.type", equals: .string("SegTTAModel"), "SegTTAModel")
        guard r.has("tta_pipeline") else { return nil }
        var (ratios, flips): ([Double], [Bool]) = ([], [])
        for i in 0..<r.count("tta_pipeline") {
            let p = "tta_pipeline.\(i)"
            switch try r.string("\(p).type", default: "") {
            case "LoadImageFromFile":
                try r.require("\(p).backend_args", equals: .null, "null")
            case "TestTimeAug":
                for g in 0..<r.count("\(p).transforms") {
                    for k in 0..<r.count("\(p).transforms.\(g)") {
                        let t = "\(p).transforms.\(g).\(k)"
                        switch try r.string("\(t).type", default: "") {
                        case "Resize":
                            try r.require("\(t).keep_ratio", equals: .bool(true), "true")
                            let ratio = try r.double("\(t).scale_factor", default: .nan)
                            guard ratio > 0 && ratio.isFinite else {
                                throw ConfigError("config key '\(t).scale_factor': must be a positive number")
                            }
                            ratios.append(ratio)
                        case "RandomFlip":
                            try r.require("\(t).direction", equals: .string("horizontal"), "horizontal")
                            let prob = try r.double("\(t).prob", default: .nan)
                            guard prob == 0 || prob == 1 else {
                                throw ConfigError("config key '\(t).prob': test-time flips are 0 or 1")
                            }
                            flips.append(prob == 1)
                        // Labels are read as the dataset type reads them (ADE20K with reduce_zero_label).
                        case "LoadAnnotations":
                            _ = try r.bool("\(t).reduce_zero_label", default: false)
                        case "PackSegInputs":
                            break
                        case let other:
                            throw ConfigError("config key '\(t).type': '\(other)' is not supported in tta_pipeline")
                        }
                    }
                }
            case let other:
                throw ConfigError("config key '\(p).type': '\(other)' is not LoadImageFromFile or TestTimeAug")
            }
        }
        guard !ratios.isEmpty || !flips.isEmpty else { return nil }
        return TestTimeAugmentation(ratios: ratios.isEmpty ? [1] : ratios, flips: flips.isEmpty ? [false] : flips)
    }

    /// mmseg's HRNet `extra` block: stage1..stage4, each {num_modules, num_branches, block, num_blocks, num_channels}.
    static func hrnet(_ r: ConfigReader) throws -> HRNetConfig {
        let stages = try (1...4).map { s in
            let p = "model.backbone.extra.stage\(s)"
            guard r.has(p) else { throw ConfigError("config key '\(p)': missing (HRNet needs stage1..stage4)") }
            let blockName = try r.string("\(p).block", default: "")
            guard let block = HRNetBlock(rawValue: blockName) else {
                throw ConfigError("config key '\(p).block': '\(blockName)' is not BASIC or BOTTLENECK")
            }
            return HRNetStage(numModules: try r.int("\(p).num_modules", default: 1),
                              numBranches: try r.int("\(p).num_branches", default: s), block: block,
                              numBlocks: try r.ints("\(p).num_blocks", default: []),
                              numChannels: try r.ints("\(p).num_channels", default: []))
        }
        let config = HRNetConfig(stages: stages)
        do { try config.validate() } catch { throw ConfigError("\(error)") }
        return config
    }

    /// The learning rate of each iteration 0..<maxIters (`schedule` applied to `optimizer.lr`).
    /// The learning rate of every iteration; with auto_scale_lr and a `globalBatch`, the base rate times
    /// globalBatch / base_batch_size.
    public func learningRates(globalBatch: Int? = nil) -> [Double] {
        let scale = autoScaleBaseBatch.flatMap { base in globalBatch.map { Double($0) / Double(base) } } ?? 1
        return schedule.rates(base: learningRate * scale, count: maxIters)
    }

    /// The precision training runs in on this machine, and, when bf16 was asked for on a CPU without a bf16
    /// dot-product instruction, the one line that says it runs fp32 instead.
    public var availablePrecision: (precision: Precision, note: String?) {
        let available = Precision.available(precision)
        guard available != precision else { return (precision, nil) }
        return (available, "bf16 (AmpOptimWrapper) requested, but this CPU has neither AVX512-BF16 nor AMX-BF16: "
                    + "training in fp32")
    }

    /// A short hash of the resolved config (trainer state records it; resume warns on a change).
    public var hash: String { String(fnv1a(tree.yaml), radix: 16) }
}
