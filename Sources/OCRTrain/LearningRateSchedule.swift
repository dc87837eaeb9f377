import Foundation

/// The learning rate of every iteration, as mmengine's ParamSchedulerHook sets it: each scheduler is active on the
/// iterations begin..<end, and on each it multiplies the current rate (mmengine's chainable form), in list order.
/// With T = end − begin − 1 and t = iteration − begin:
///   PolyLR:   t = 0 keeps the rate; then lr ← (lr − eta_min)·(1 − 1/(T − t + 1))^power + eta_min, which reaches
///             eta_min at t = T (the last iteration of its range) and leaves it there after `end`;
///   LinearLR: t = 0 multiplies by start_factor; then lr ← lr·(1 + (e − s)/(T·s + (t − 1)·(e − s))), reaching
///             end_factor × the rate it started from at t = T.
/// The legacy mmseg 0.x warm-up (`warmup_iters`, `warmup_ratio` in a single PolyLR block) multiplies the result by
/// ratio + (1 − ratio)·iteration/warmup_iters over the first iterations.
public struct LearningRateSchedule: Equatable {
    public enum Rule: Equatable {
        case poly(power: Double, etaMin: Double)
        case linear(startFactor: Double, endFactor: Double)
    }

    public struct Phase: Equatable {
        public var rule: Rule
        public var begin: Int
        public var end: Int

        public init(rule: Rule, begin: Int, end: Int) {
            self.rule = rule; self.begin = begin; self.end = end
        }
    }

    public var phases: [Phase]
    public var warmupIters = 0
    public var warmupRatio = 0.1

    public init(phases: [Phase]) { self.phases = phases }

    /// The rates of iterations 0..<count for a base rate (`optimizer.lr`), computed in the order mmengine does.
    public func rates(base: Double, count: Int) -> [Double] {
        var lr = base
        return (0..<count).map { iteration in
            for phase in phases where phase.begin <= iteration && iteration < phase.end {
                let (t, total) = (iteration - phase.begin, phase.end - phase.begin - 1)
                switch phase.rule {
                case let .poly(power, etaMin):
                    if t > 0 { lr = (lr - etaMin) * pow(1 - 1 / Double(total - t + 1), power) + etaMin }
                case let .linear(s, e):
                    lr = t == 0 ? lr * s : lr * (1 + (e - s) / (Double(total) * s + Double(t - 1) * (e - s)))
                }
            }
            guard iteration < warmupIters else { return lr }
            return lr * (warmupRatio + (1 - warmupRatio) * Double(iteration) / Double(warmupIters))
        }
    }

    /// `param_scheduler` as a config gives it: one map (PolyLR over the whole run, with the optional legacy warm-up)
    /// or mmengine's list of {type: PolyLR | LinearLR, begin, end, by_epoch: false, …}; begin/end default to the run.
    static func read(_ r: ConfigReader, maxIters: Int) throws -> LearningRateSchedule {
        let key = "param_scheduler"
        if case .list(let items)? = r.subtree(key) {
            guard !items.isEmpty else { throw ConfigError("config key '\(key)': the list is empty") }
            let phases = try items.indices.map { try phase(r, "\(key).\($0)", maxIters: maxIters) }
            return LearningRateSchedule(phases: phases)
        }
        var schedule = LearningRateSchedule(phases: [try phase(r, key, maxIters: maxIters)])
        schedule.warmupIters = try r.int("\(key).warmup_iters", default: 0)
        schedule.warmupRatio = try r.double("\(key).warmup_ratio", default: 0.1)
        guard schedule.warmupIters >= 0 else { throw ConfigError("config key '\(key).warmup_iters': must be ≥ 0") }
        return schedule
    }

    private static func phase(_ r: ConfigReader, _ p: String, maxIters: Int) throws -> Phase {
        try r.require("\(p).by_epoch", equals: .bool(false), "false (the schedule counts iterations)")
        let begin = try r.int("\(p).begin", default: 0)
        let end = try r.int("\(p).end", default: maxIters)
        guard begin >= 0, end > begin else {
            throw ConfigError("config key '\(p).end': \(end) must be larger than begin (\(begin)) ≥ 0")
        }
        let rule: Rule
        switch try r.string("\(p).type", default: "PolyLR") {
        case "PolyLR":
            rule = .poly(power: try r.double("\(p).power", default: 1), etaMin: try r.double("\(p).eta_min", default: 0))
        case "LinearLR":
            let (s, e) = (try r.double("\(p).start_factor", default: 1.0 / 3), try r.double("\(p).end_factor", default: 1))
            guard (0...1).contains(s), (0...1).contains(e), s > 0 || e == 0 else {
                throw ConfigError("config key '\(p).start_factor': factors must lie in (0, 1]")
            }
            rule = .linear(startFactor: s, endFactor: e)
        case let other:
            throw ConfigError("config key '\(p).type': '\(other)' is not PolyLR or LinearLR")
        }
        return Phase(rule: rule, begin: begin, end: end)
    }
}
