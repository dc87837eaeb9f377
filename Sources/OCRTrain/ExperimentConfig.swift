import Foundation
import OCRData
import OCRModel
import OCRTensor

/// Everything a run needs, read from the YAML of INTERFACE.md (key paths are a contract) plus `--cfg-options`.
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

    /// The `data:` block (dataset, root, batch size per rank, pipelines, splits, loader workers).
    public var data: DataConfig
    public var learningRate = 0.01
    public var momentum = 0.9
    public var weightDecay = 0.0005
    /// GEMM operand precision of training steps: `optim_wrapper: {type: AmpOptimWrapper, dtype: bfloat16}` (or
    /// `train --amp`) asks for bf16; evaluation is fp32 either way.
    public var precision = Precision.float32
    public var polyPower = 0.9
    public var etaMin = 0.0001
    public var warmupIters = 0
    public var warmupRatio = 0.1

    public var maxIters = 80000
    public var valInterval = 8000
    public var checkpointInterval = 8000
    public var maxKeep = 3
    public var logInterval = 50
    public var seed: UInt64 = 0
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
        switch try r.string("model.backbone.type", default: "ResNetV1c") {
        case "ResNetV1c":
            model.depth = try r.int("model.backbone.depth", default: model.depth)
            model.baseChannels = try r.int("model.backbone.base_channels", default: model.baseChannels)
        case "HRNet":
            // mmseg's ocrnet_hr18 defaults (1×1 FCN conv as wide as the concatenation, no dropout); the keys below
            // may still override them.
            model = .hrnet(try Self.hrnet(r))
        case let other:
            throw ConfigError("config key 'model.backbone.type': '\(other)' is not supported (ResNetV1c, HRNet)")
        }
        model.numClasses = try r.int("model.num_classes", default: model.numClasses)
        model.alignCorners = try r.bool("model.align_corners", default: model.alignCorners)
        model.classWeights = try r.doubles("model.class_weight", default: nil)?.map { Float($0) }
        syncBN = try r.bool("model.sync_bn", default: syncBN)
        let heads = r.count("model.decode_head")
        if heads != 0 && heads != 2 {
            throw ConfigError("config key 'model.decode_head': OCRNet has 2 heads (FCNHead, OCRHead), got \(heads)")
        }
        for (i, expected) in ["FCNHead", "OCRHead"].enumerated() {
            let p = "model.decode_head.\(i)"
            let type = try r.string("\(p).type", default: expected)
            guard type == expected else { throw ConfigError("config key '\(p).type': expected \(expected), got \(type)") }
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
            }
            let dropout = Float(try r.double("\(p).dropout_ratio", default: 0.1))
            let weight = Float(try r.double("\(p).loss_weight", default: i == 0 ? 0.4 : 1.0))
            if i == 0 {
                model.fcnChannels = try r.int("\(p).channels", default: model.fcnChannels)
                let convs = try r.int("\(p).num_convs", default: 1)
                guard convs == 1 else { throw ConfigError("config key '\(p).num_convs': only 1 is supported") }
                model.fcnKernelSize = try r.int("\(p).kernel_size", default: model.fcnKernelSize)
                guard try !r.bool("\(p).concat_input", default: false) else {
                    throw ConfigError("config key '\(p).concat_input': only false is supported")
                }
                model.fcnDropout = dropout; model.auxLossWeight = weight
            } else {
                model.ocrChannels = try r.int("\(p).channels", default: model.ocrChannels)
                model.ocrMidChannels = try r.int("\(p).ocr_channels", default: model.ocrMidChannels)
                model.ocrDropout = dropout; model.ocrLossWeight = weight
            }
        }
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
        testFlip = try r.bool("model.test_cfg.flip", default: false)
        testScales = try r.doubles("model.test_cfg.scales", default: [1.0]) ?? [1.0]
        do { try model.validate() } catch { throw ConfigError("\(error)") }

        guard let block = r.subtree("data")?.plain as? [String: Any] else {
            throw ConfigError("config key 'data': missing (needs at least type and data_root)")
        }
        do { data = try DataConfig(block) } catch { throw ConfigError("config key \(error)") }

        let optimizerType = try r.string("optimizer.type", default: "SGD")
        guard optimizerType == "SGD" else { throw ConfigError("config key 'optimizer.type': only SGD is supported") }
        learningRate = try r.double("optimizer.lr", default: learningRate)
        momentum = try r.double("optimizer.momentum", default: momentum)
        weightDecay = try r.double("optimizer.weight_decay", default: weightDecay)
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
        let schedulerType = try r.string("param_scheduler.type", default: "PolyLR")
        guard schedulerType == "PolyLR" else { throw ConfigError("config key 'param_scheduler.type': only PolyLR is supported") }
        polyPower = try r.double("param_scheduler.power", default: polyPower)
        etaMin = try r.double("param_scheduler.eta_min", default: etaMin)
        warmupIters = try r.int("param_scheduler.warmup_iters", default: warmupIters)
        warmupRatio = try r.double("param_scheduler.warmup_ratio", default: warmupRatio)

        maxIters = try r.int("train_cfg.max_iters", default: maxIters)
        valInterval = try r.int("train_cfg.val_interval", default: valInterval)
        checkpointInterval = try r.int("checkpoint.interval", default: checkpointInterval)
        maxKeep = try r.int("checkpoint.max_keep", default: maxKeep)
        logInterval = try r.int("log.interval", default: logInterval)
        distTimeout = try r.double("env_cfg.dist_cfg.timeout", default: distTimeout)
        guard distTimeout > 0 && distTimeout.isFinite else {
            throw ConfigError("config key 'env_cfg.dist_cfg.timeout': must be a positive number of seconds")
        }
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

    /// Learning rate at iteration `iter` (0-based) of `maxIters`: PolyLR (lr − eta_min)·(1 − iter/max)^power + eta_min,
    /// as mmengine steps it per iteration, times a linear warm-up factor over the first `warmupIters`.
    public func learningRate(at iter: Int) -> Double {
        let progress = min(Double(iter) / Double(maxIters), 1)
        var lr = (learningRate - etaMin) * pow(1 - progress, polyPower) + etaMin
        if iter < warmupIters {
            lr *= warmupRatio + (1 - warmupRatio) * Double(iter) / Double(warmupIters)
        }
        return lr
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
