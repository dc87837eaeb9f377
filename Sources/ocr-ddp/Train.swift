import ArgumentParser
import Foundation
import OCRTrain

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train OCRNet (the built-in quick-start config on synthetic data when no CONFIG is given).",
        discussion: """
            Rank 0 writes DIR/config.yaml, DIR/log.jsonl and checkpoints DIR/iter_<N>/ (mmseg keys); DIR/last_checkpoint \
            and DIR/best_checkpoint name them relative to DIR. SIGTERM, SIGINT and SIGUSR1 finish the step, checkpoint \
            and exit 0 (under bare mpirun prefer SIGUSR1 or Launch/dist_train.sh: README, Preemption). A collective that \
            does not complete within env_cfg.dist_cfg.timeout seconds (1800) aborts the job naming the ranks missing.
            """)

    @Argument(help: "YAML config (see Configs/); default: the built-in quick-start config.")
    var config: String?
    @Option(help: "Work directory (default: work_dirs/<config name>).")
    var workDir: String?
    @Option(help: "Resume: bare --resume takes the newest complete checkpoint of the work dir; or give a checkpoint directory.")
    var resume: String?
    @Option(help: "Initialise from a safetensors file with mmseg keys (a whole model, or a pretrained backbone).")
    var loadFrom: String?
    @Option(help: "Stop after this iteration as a preemption would (checkpoint, exit 0); continue later with --resume.")
    var stopAtIter: Int?
    @OptionGroup var amp: AmpOption
    @OptionGroup var options: ConfigOptions

    /// What a bare `--resume` stands for.
    static let latestCheckpoint = "@latest"

    func validate() throws {
        if resume != nil && loadFrom != nil { throw ValidationError("--resume and --load-from exclude each other") }
    }

    func run() throws {
        let experiment = try options.load(config, amp: amp)
        let name = config.map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension } ?? "quickstart"
        let dir = workDir ?? "work_dirs/\(name)"
        try withProcessGroup(timeout: experiment.distTimeout, threads: experiment.gradientCommunication.threadSupport) { comm in
            try Trainer(config: experiment, workDir: dir, comm: comm).run(resume: resume == Self.latestCheckpoint ? "" : resume, loadFrom: loadFrom,
                                                                            stopAtIteration: stopAtIter)
        }
    }
}
