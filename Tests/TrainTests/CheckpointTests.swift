import Foundation
import OCRModel
import OCRTensor
import OCRTrain
import OCRTestSupport
import XCTest

final class CheckpointTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("ocr-ddp-ck")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func smallModel() -> OCRNet {
        var c = ModelConfig()
        c.depth = 18; c.baseChannels = 8; c.fcnChannels = 16; c.ocrChannels = 16; c.ocrMidChannels = 8; c.numClasses = 3
        return OCRNet(config: c)
    }

    func state(_ iteration: Int) -> TrainerState {
        TrainerState(iteration: iteration, samplerEpoch: 0, samplerConsumed: iteration * 2, seed: 0, dropoutCalls: [1, 2],
                     bestMIoU: nil, bestIteration: nil, worldSize: 1, configHash: "x")
    }

    /// A crash while the next checkpoint is written (its staging directory half full, or a directory without its
    /// trainer state) leaves the previous checkpoint what `latest()` finds and what loads.
    func testInterruptedWriteLeavesThePreviousCheckpointLoadable() throws {
        let store = CheckpointStore(workDir: directory.path)
        let model = smallModel()
        let momentum = Tensor(zeros: [model.store.parameterCount])
        try store.save(store: model.store, momentum: momentum, state: state(6))
        XCTAssertEqual(store.latest(), store.directory(iteration: 6))
        // Crash during the write of iteration 12: staging dir with only the weights, pointer untouched.
        let staging = directory.appendingPathComponent(".iter_12.tmp-999")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        try Data("partial".utf8).write(to: staging.appendingPathComponent("model.safetensors"))
        // And a crash between the rename and the pointer update of a manually copied, incomplete directory.
        let incomplete = directory.appendingPathComponent("iter_18")
        try FileManager.default.createDirectory(at: incomplete, withIntermediateDirectories: true)
        try Data("partial".utf8).write(to: incomplete.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(store.latest(), store.directory(iteration: 6))
        XCTAssertEqual(try CheckpointStore.readState(store.latest()!), state(6))
        let reloaded = smallModel()
        XCTAssertTrue(try reloaded.store.loadStateDict(
            from: SafetensorsFile(path: "\(store.latest()!)/model.safetensors")).isComplete)
        // A pointer naming a vanished checkpoint falls back to the newest complete one.
        try Data("\(directory.path)/iter_99\n".utf8).write(to: directory.appendingPathComponent("last_checkpoint"))
        XCTAssertEqual(store.latest(), store.directory(iteration: 6))
    }

    func testPruneKeepsTheNewestAndTheBest() throws {
        let store = CheckpointStore(workDir: directory.path)
        let model = smallModel()
        let momentum = Tensor(zeros: [model.store.parameterCount])
        for i in [2, 4, 6, 8, 10] { try store.save(store: model.store, momentum: momentum, state: state(i)) }
        store.prune(keep: 2, best: 4)
        XCTAssertEqual(store.completeIterations(), [4, 8, 10])
    }

    func testMomentumRoundTripsByParameterName() throws {
        let store = CheckpointStore(workDir: directory.path)
        let model = smallModel()
        let momentum = Tensor(zeros: [model.store.parameterCount])
        for i in 0..<momentum.count { momentum[i] = Float(i % 97) * 0.01 }
        try store.save(store: model.store, momentum: momentum, state: state(3))
        let restored = Tensor(zeros: momentum.shape)
        try CheckpointStore.loadMomentum(store.directory(iteration: 3), store: model.store, into: restored)
        XCTAssertEqual(restored.array, momentum.array)
    }

    func testCorruptCheckpointIsAnErrorNamingTheFile() throws {
        let store = CheckpointStore(workDir: directory.path)
        let model = smallModel()
        try store.save(store: model.store, momentum: Tensor(zeros: [model.store.parameterCount]), state: state(1))
        let file = "\(store.directory(iteration: 1))/optimizer.safetensors"
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: file))
        XCTAssertThrowsError(try CheckpointStore.loadMomentum(store.directory(iteration: 1), store: model.store,
                                                              into: Tensor(zeros: [model.store.parameterCount]))) {
            XCTAssertTrue("\($0)".contains(file), "\($0)")
        }
    }
}
