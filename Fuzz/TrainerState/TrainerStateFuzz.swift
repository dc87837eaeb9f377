import Foundation
import FuzzSupport
import OCRTrain

/// Any bytes as a checkpoint's trainer_state.json, parsed and checked as `--resume` reads it.
func fuzzTrainerState(_ bytes: [UInt8]) {
    _ = try? CheckpointStore.parseState(Data(bytes), path: "fuzz/trainer_state.json")
}

@main enum Main { static func main() { fuzzOrReplay(fuzzTrainerState) } }
