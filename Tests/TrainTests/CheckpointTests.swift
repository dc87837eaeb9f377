import Foundation
import OCRData
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
        TrainerState(iteration: iteration, samplerEpoch: 0, samplerConsumed: iteration * 2, seed: 0, bestMIoU: nil,
                     bestIteration: nil, layout: StepLayout(ranks: 1, batchSize: 2), configHash: "x")
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

    /// trainer_state.json values that would crash or mislead a resume are errors naming the file and the field.
    func testImpossibleTrainerStatesAreRefused() throws {
        let good = TrainerState(iteration: 8, samplerEpoch: 1, samplerConsumed: 4, seed: 0, bestMIoU: 50,
                                bestIteration: 8, layout: StepLayout(ranks: 2, batchSize: 2, accumulation: 2),
                                configHash: "x")
        XCTAssertNil(good.problem)
        var states: [(TrainerState, String)] = []
        var s = good; s.samplerEpoch = -1; states.append((s, "sampler position"))
        s = good; s.samplerConsumed = -1; states.append((s, "sampler position"))
        s = good; s.iteration = -1; s.bestIteration = nil; states.append((s, "iteration -1"))
        s = good; s.worldSize = 0; s.layout = nil; states.append((s, "worldSize"))
        s = good; s.worldSize = 4; states.append((s, "layout.ranks 2 is not worldSize 4"))
        s = good; s.layout?.accumulation = 0; states.append((s, "accumulation 0) is out of range"))
        s = good; s.peakMemoryMB = -5; states.append((s, "peakMemoryMB"))
        s = good; s.bestMIoU = 250; states.append((s, "bestMIoU"))
        s = good; s.bestIteration = 9; states.append((s, "bestIteration"))
        for (state, needle) in states {
            let data = try JSONEncoder().encode(state)
            do { _ = try CheckpointStore.parseState(data, path: "w/iter_8/trainer_state.json"); XCTFail(needle) } catch {
                XCTAssertTrue("\(error)".hasPrefix("w/iter_8/trainer_state.json: ") && "\(error)".contains(needle),
                              "\(error)")
            }
        }
        XCTAssertNoThrow(try CheckpointStore.parseState(try JSONEncoder().encode(good), path: "p"))
        do { _ = try CheckpointStore.parseState(Data("{\"iteration\": 1}".utf8), path: "p"); XCTFail() } catch {
            XCTAssertTrue("\(error)".hasPrefix("p: not a valid trainer state"), "\(error)")
        }
    }
}
