#!/usr/bin/env python3
"""Golden data from real mmsegmentation 1.2.2 (Tools/mmseg_env.py says how to install it).

    python3 Tools/make_golden_mmseg.py        # from the repository root; writes Tests/Fixtures/mmseg/

Models are built by mmseg's registry from its own OCRNet config files, with SyncBN replaced by BN (one process),
no pretrained download and, where noted, reduced widths so that a whole training step's tensors fit in a small
fixture. Numbers are float64: weights are drawn in float32 by mmseg's own init_weights (then BN statistics and
affine parameters perturbed, so that they matter), converted to float64 exactly, and every result is stored back
as float32 (integers as int64). The metadata of each file records the reference versions.

Files:
  <case>.safetensors   one `train_step` of mmseg (data preprocessor, cascade with the FCN head run twice,
                       parse_losses, OptimWrapper + SGD), then `test_step` after it; cases r101 (R101-D8), hr18s
                       (HRNetV2-W18-small structure), hr48 (HRNetV2-W48 structure) and r101_ohem (r101 with
                       OHEMPixelSampler on both heads), all reduced in width:
      input              preprocessed batch N×3×H×W (normalised, RGB), label (I64, 10 % ignored = 255)
      param.<key>        state_dict before the step
      feat.c1..c4        backbone outputs; out.aux_logits (first FCN pass), out.ocr_logits (before resizing)
      out.loss_aux, out.loss_ocr, out.loss   mmseg's decode_0.loss_ce, decode_1.loss_ce (weights 0.4, 1.0 applied)
      grad.<key>         parameter gradients as the optimizer saw them
      after.<key>        BN buffers after the step (the FCN head's counted twice)
      stepped.<key>      parameters after the SGD step (lr, momentum, weight_decay in the metadata)
      (metadata float32_errors: PyTorch's own float32 step against the float64 truth, which the tests allow us,
                         the largest seen on the machines float32_machines lists)
      steps3.lr          learning rates of 3 steps under mmengine's PolyLR(begin 0, end 3), r101 only
      steps3.<key>       parameters after those 3 steps
      test.input, test.seg_logits, test.pred   test_step in eval mode after the step: logits resized to the
                         metainfo's ori_shape (larger than the input, a test-time resize) and their argmax
    metadata: model (mmseg's model dict as JSON, data_preprocessor removed), versions, lr, momentum, weight_decay
  losses.safetensors   mmseg CrossEntropyLoss / OHEMPixelSampler on random logits: <case>.logits, <case>.label,
                       <case>.loss, <case>.dlogits; metadata <case> = JSON of the loss_decode/sampler settings
  schedules.json       mmengine's learning rates for param_scheduler lists: [{name, lr, max_iters,
                       param_scheduler, rates}]
  resize.safetensors   mmseg's Resize (mmcv, cv2 backend: INTER_LINEAR images, INTER_NEAREST labels), keep_ratio, on
                       random uint8 images: <case>.image (H×W×3), <case>.label (H×W), <case>.resized_image,
                       <case>.resized_label (U8); metadata <case> = JSON {"scale": [w, h]}
  checkpoint/          a real mmseg checkpoint end to end: ocrnet_hr18s_4xb2-40k_cityscapes-512x1024 at reduced width
                       (random init, BN statistics from the images), saved by mmengine's save_checkpoint
                       (model.pth), converted by Tools/convert_pth.py (model.safetensors); config.yaml from
                       Tools/mmseg_config.py with data_root here and the test Resize at (160, 80), a real ×1.25
                       test-time resize of the 64×128 images; a Cityscapes-layout val split (leftImg8bit, gtFine
                       labelTrainIds); predictions.safetensors: mmseg's test_step prediction per image (U8, at the
                       image's size), from its own test pipeline reading the files, and as tta.<stem> its --tta
                       prediction (SegTTAModel over the tta_pipeline's 6 ratios × 2 flips)
  keys.json            {"configs": {mmseg config name: key list id}, "lists": {id: [{name, shape, dtype}]}}: the
                       state_dict of every OCRNet config mmseg 1.2.2 ships, at full size
"""

import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmseg_env  # noqa: E402  (stand-ins first, then mmseg)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.optim.scheduler import LinearLR, PolyLR  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.models.losses import CrossEntropyLoss  # noqa: E402
from mmseg.registry import MODELS, TASK_UTILS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from make_golden import canonicalize_header  # noqa: E402  (byte-identical regeneration)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "mmseg")
IGNORE = 255
OPTIMIZER = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005)


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def save(tensors, name, metadata):
    path = os.path.join(OUT, name)
    save_file(tensors, path, metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    canonicalize_header(path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


def plain_bn(node):
    """SyncBN → BN everywhere in a config dict (one process has nothing to synchronise)."""
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for v in node.values():
            plain_bn(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            plain_bn(v)
    return node


def model_dict(config_name, edit=None):
    """mmseg's `model` dict of a shipped OCRNet config, BN instead of SyncBN, no pretrained weights."""
    cfg = Config.fromfile(os.path.join(mmseg_env.config_dir(), "ocrnet", config_name + ".py"))
    model = plain_bn(cfg.model.to_dict())
    model["pretrained"] = None
    if edit:
        edit(model)
    return model


def build(model):
    torch.manual_seed(0)
    net = MODELS.build(ConfigDict(copy.deepcopy(model)))
    net.init_weights()
    return net


# ----------------------------------------------------------------------------------------------------------------
# reduced models: mmseg configs with narrower layers
# ----------------------------------------------------------------------------------------------------------------

def r101_reduced(model):
    b = model["backbone"]
    b.update(stem_channels=4, base_channels=4)
    fcn, ocr = model["decode_head"]
    fcn.update(in_channels=64, channels=16, dropout_ratio=0)   # dropout masks are random; parity needs none
    ocr.update(in_channels=128, channels=32, ocr_channels=16, dropout_ratio=0)


def hrnet_reduced(widths, stage1):
    def edit(model):
        extra = model["backbone"]["extra"]
        extra["stage1"]["num_channels"] = (stage1,)
        for s in (2, 3, 4):
            extra[f"stage{s}"]["num_channels"] = tuple(widths[:s])
        fcn, ocr = model["decode_head"]
        fcn.update(in_channels=list(widths), channels=sum(widths))
        ocr.update(in_channels=list(widths), channels=32, ocr_channels=16)
    return edit


def with_ohem(edit):
    """OHEMPixelSampler on both heads: by loss rank on the FCN head, by threshold on the OCR head. (The official
    HRNet-OCR recipe's thresh 0.9 keeps every pixel of an untrained network; 0.05 splits this one's pixels. On the
    4-channel HRNet the sparse hard-pixel gradient is conditioned too badly to compare; R101-D8 is not.)"""
    def apply(model):
        edit(model)
        fcn, ocr = model["decode_head"]
        fcn["sampler"] = dict(type="OHEMPixelSampler", min_kept=1500)
        ocr["sampler"] = dict(type="OHEMPixelSampler", thresh=0.05, min_kept=2000)
    return apply


CASES = [
    # name, config, edit, batch, height, width, ori (test-time size)
    ("r101", "ocrnet_r101-d8_4xb2-40k_cityscapes-512x1024", r101_reduced, 2, 64, 64, (80, 72)),
    ("hr18s", "ocrnet_hr18s_4xb2-40k_cityscapes-512x1024", hrnet_reduced((4, 8, 16, 32), 8), 2, 64, 56, (77, 70)),
    ("hr48", "ocrnet_hr48_4xb2-40k_cityscapes-512x1024", hrnet_reduced((4, 8, 16, 32), 8), 2, 64, 56, (77, 70)),
    ("r101_ohem", "ocrnet_r101-d8_4xb2-40k_cityscapes-512x1024", with_ohem(r101_reduced), 2, 64, 64, (64, 64)),
]


def perturb_norms(net, gen):
    """BN affine parameters away from their initial values, so that each one's use is tested.
    docs/TESTING.md: the residual BNs mmseg's ResNet zero-initialises start at γ = 0.1 and every γ varies by 10 %;
    full-strength residual branches throughout a deep stack would amplify float32 rounding beyond what the
    comparison can judge."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            start = torch.where(m.weight.data == 0, torch.full_like(m.weight.data, 0.1), m.weight.data)
            m.weight.data = start * (1 + 0.1 * torch.randn(c, generator=gen))
            m.bias.data = 0.1 * torch.randn(c, generator=gen)


def calibrate_running_statistics(net, data, gen):
    """Running statistics near the activations' own (one train-mode pass with momentum 1 on another batch), then
    moved by a few per cent: eval-mode outputs stay in range through a deep stack and the statistics still matter."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        net(**net.data_preprocessor(data, True), mode="tensor")
    for m in norms:
        c = m.num_features
        m.momentum = 0.1
        m.num_batches_tracked.zero_()
        m.running_mean.data += 0.05 * m.running_var.data.sqrt() * torch.randn(c, generator=gen).double()
        m.running_var.data *= 1 + 0.1 * torch.rand(c, generator=gen).double()


def batch(gen, n, h, w, num_classes, ori=None):
    """uint8 BGR images as mmseg's LoadImageFromFile gives them, and labels with 10 % ignored pixels."""
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for _ in range(n)]
    samples = []
    for _ in range(n):
        label = torch.randint(0, num_classes, (1, h, w), generator=gen)
        label[torch.rand(1, h, w, generator=gen) < 0.1] = IGNORE
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=ori or (h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return dict(inputs=images, data_samples=samples)


def in_float64(preprocessor, record):
    """mmseg's data preprocessor normalises in float32; the float64 model gets exactly those values."""
    forward = preprocessor.forward

    def wrapped(data, training=False):
        out = forward(data, training)
        record.append(out["inputs"].clone())
        out["inputs"] = out["inputs"].double()
        return out
    preprocessor.forward = wrapped


def recording(module, record, attr="forward"):
    original = getattr(module, attr)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        record.append(out)
        return out
    setattr(module, attr, wrapped)


def train_case(name, config_name, edit, n, h, w, ori):
    model = model_dict(config_name, edit)
    model["data_preprocessor"]["size"] = (h, w)   # the crop size the preprocessor pads to
    net = build(model)
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    perturb_norms(net, gen)
    net = net.double().train()
    num_classes = model["decode_head"][0]["num_classes"]
    inputs, features, fcn_out, ocr_out = [], [], [], []
    in_float64(net.data_preprocessor, inputs)
    calibrate_running_statistics(net, batch(gen, n, h, w, num_classes), gen)
    inputs.clear()
    data = batch(gen, n, h, w, num_classes)
    initial = copy.deepcopy(net)
    t = {f"param.{k}": f32(v) if v.is_floating_point() else v.to(torch.int64).reshape(1).clone()
         for k, v in net.state_dict().items()}
    recording(net.backbone, features)
    recording(net.decode_head[0], fcn_out)
    recording(net.decode_head[1], ocr_out)
    wrapper = build_optim_wrapper(net, dict(type="OptimWrapper", optimizer=OPTIMIZER, clip_grad=None))
    grads = {}
    names = {id(p): k for k, p in net.named_parameters()}
    wrapper.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: grads.update({names[id(p)]: p.grad.clone() for g in opt.param_groups
                                                for p in g["params"]}))
    log_vars = net.train_step(data, wrapper)
    assert len(fcn_out) == 2, "mmseg's cascade runs the FCN head twice per training step"

    t["input"] = f32(inputs[0])
    t["label"] = torch.stack([s.gt_sem_seg.data[0] for s in data["data_samples"]]).to(torch.int64)
    for i, feature in enumerate(features[0]):
        t[f"feat.c{i + 1}"] = f32(feature)
    t["out.aux_logits"] = f32(fcn_out[0])
    t["out.ocr_logits"] = f32(ocr_out[0])
    t["out.loss_aux"] = f32(log_vars["decode_0.loss_ce"].reshape(1))
    t["out.loss_ocr"] = f32(log_vars["decode_1.loss_ce"].reshape(1))
    t["out.loss"] = f32(log_vars["loss"].reshape(1))
    for k, g in grads.items():
        t[f"grad.{k}"] = f32(g)
    params = dict(net.named_parameters())
    for k, v in net.state_dict().items():
        if k in params:
            t[f"stepped.{k}"] = f32(v)
        else:
            t[f"after.{k}"] = f32(v) if v.is_floating_point() else v.to(torch.int64).reshape(1).clone()

    float32_errors, machines = with_earlier_machines(f"{name}.safetensors", model, t["input"],
                                                     pytorch_float32_errors(initial, t["input"],
                                                                            data["data_samples"], grads, t))

    # Test mode after the step, at a larger original size: mmseg resizes the logits to the input, then to ori_shape.
    net.eval()
    test_data = batch(gen, 1, h, w, num_classes, ori=ori)
    inputs.clear()
    with torch.no_grad():
        result = net.test_step(test_data)[0]
    t["test.input"] = f32(inputs[0])
    t["test.seg_logits"] = f32(result.seg_logits.data.unsqueeze(0))
    t["test.pred"] = result.pred_sem_seg.data.to(torch.int64)

    if name == "r101":
        t.update(three_steps(initial, data))
    model.pop("data_preprocessor")
    save(t, f"{name}.safetensors", dict(model=model, versions=mmseg_env.versions(), config=config_name,
                                        float32_errors=float32_errors, float32_machines=machines,
                                        **{k: OPTIMIZER[k] for k in ("lr", "momentum", "weight_decay")}))


def pytorch_float32_errors(initial, inputs, samples, truth, reference):
    """How far PyTorch's own float32 step is from the float64 truth: per parameter gradient [relative norm, largest
    difference over largest magnitude], per forward output (feat.*, out.*_logits) [None, the latter], and over
    "all gradients" [relative norm, None]. Deep narrow stacks (HRNet-W48's 7 modules) are conditioned
    so that a correct float32 step misses by 1e-2 and more; the tests bound ours by these figures. One float32 run
    is one draw of rounding, so each figure is the larger of two runs that differ only in summation order (one
    thread and all of them), as ours differ with OpenBLAS's threads (HRNet-W48's OCR logits on Zen 3: 3.2e-4 on
    two, 6.1e-4 on one). channels_last is no such variant: on one thread PyTorch 2.15's float32 misses R101's
    stem.1.weight gradient by 0.22."""
    threads = torch.get_num_threads()
    runs = []
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        runs.append(pytorch_float32_run(initial, inputs, samples, truth, reference))
    torch.set_num_threads(threads)
    errors = {k: [None if v is None else max(run[k][i] for run in runs) for i, v in enumerate(first)]
              for k, first in runs[0].items()}
    worst = max((k for k in errors if errors[k][0] is not None), key=lambda k: errors[k][0])
    print(f"PyTorch float32 against float64, the larger of {len(runs)} runs: {worst} {errors[worst]}; "
          f"OCR logits {[run['out.ocr_logits'][1] for run in runs]}")
    return errors


def this_machine():
    """The CPU and PyTorch that measured a file's float32 errors."""
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, torch {torch.__version__}"


def with_earlier_machines(name, model, inputs, errors):
    """`errors` merged with the figures an earlier run on another machine recorded in this case's file: the larger
    of each. PyTorch's float32 rounding differs by machine, not only by thread count: HRNet-W48's median gradient
    error is 1.0e-2 on the Emerald Rapids VM that first wrote the file and 3.7e-3 on Zen 3, its OCR logits' 1.7e-4
    and 5.1e-4. Merged only where the case is unchanged (same model dict and input), so the truth is the same.
    Returns the errors and the list of machines they come from."""
    path = os.path.join(OUT, name)
    try:
        with safe_open(path, "pt") as old:
            meta = old.metadata()
            stored = {k: v for k, v in model.items() if k != "data_preprocessor"}   # as `save` stores it
            same = json.loads(meta["model"]) == json.loads(json.dumps(stored)) and torch.equal(old.get_tensor("input"),
                                                                                               inputs)
            earlier, machines = json.loads(meta["float32_errors"]), json.loads(meta["float32_machines"])
    except (OSError, KeyError):
        same = False
    if not same:
        return errors, [this_machine()]
    merged = {k: [None if v is None else max(v, earlier[k][i]) for i, v in enumerate(figures)]
              for k, figures in errors.items()}
    return merged, sorted(set(machines) | {this_machine()})


def pytorch_float32_run(initial, inputs, samples, truth, reference):
    """One float32 training step of `initial`: its errors as `pytorch_float32_errors` describes them."""
    net = copy.deepcopy(initial).float().train()
    features, fcn_out, ocr_out = [], [], []
    recording(net.backbone, features)
    recording(net.decode_head[0], fcn_out)
    recording(net.decode_head[1], ocr_out)
    losses = net.loss(inputs, copy.deepcopy(samples))
    sum(v for k, v in losses.items() if "loss" in k).backward()
    outputs = dict({f"feat.c{i + 1}": f for i, f in enumerate(features[0])},
                   **{"out.aux_logits": fcn_out[0], "out.ocr_logits": ocr_out[0]})
    errors = {k: [None, ((v.double() - reference[k].double()).abs().max() / reference[k].abs().max()).item()]
              for k, v in outputs.items()}
    for k, p in net.named_parameters():
        ref, diff = truth[k], p.grad.double() - truth[k]
        errors[k] = [(diff.norm() / ref.norm()).item(), (diff.abs().max() / ref.abs().max()).item()]
    squares = [((p.grad.double() - truth[k]).norm() ** 2, truth[k].norm() ** 2) for k, p in net.named_parameters()]
    errors["all gradients"] = [(sum(d for d, _ in squares) / sum(r for _, r in squares)).sqrt().item(), None]
    return errors


def three_steps(net, data):
    """Three train_steps on one batch under mmengine's PolyLR(eta_min 1e-3, begin 0, end 3), stepped per iteration
    as its ParamSchedulerHook does: T = end − begin − 1 = 2, so the third step runs at eta_min."""
    wrapper = build_optim_wrapper(net, dict(type="OptimWrapper", optimizer=OPTIMIZER, clip_grad=None))
    scheduler = PolyLR(wrapper, eta_min=1e-3, power=0.9, begin=0, end=3, by_epoch=False)
    rates = []
    for _ in range(3):
        rates.append(wrapper.optimizer.param_groups[0]["lr"])
        net.train_step(copy.deepcopy(data), wrapper)
        scheduler.step()
    t = {"steps3.lr": torch.tensor(rates, dtype=torch.float64).float()}
    for k, v in net.named_parameters():
        t[f"steps3.{k}"] = f32(v)
    return t


# ----------------------------------------------------------------------------------------------------------------
# losses, schedules, key lists
# ----------------------------------------------------------------------------------------------------------------

LOSS_CASES = [
    ("mean_all_pixels", dict(loss_weight=1.0), None, 0.2),
    ("avg_non_ignore", dict(loss_weight=1.0, avg_non_ignore=True), None, 0.2),
    ("class_weight", dict(loss_weight=0.4, class_weight=[0.5, 1.0, 2.0, 0.8, 1.5]), None, 0.0),
    ("ohem_thresh", dict(loss_weight=1.0), dict(type="OHEMPixelSampler", thresh=0.5, min_kept=40), 0.2),
    ("ohem_loss_rank", dict(loss_weight=1.0), dict(type="OHEMPixelSampler", min_kept=40), 0.2),
]


def losses():
    gen = torch.Generator().manual_seed(7)
    t, metadata = {}, {"versions": json.dumps(mmseg_env.versions())}
    for name, loss_cfg, sampler_cfg, ignored in LOSS_CASES:
        logits = (2 * torch.randn(2, 5, 9, 7, generator=gen)).double().requires_grad_(True)
        label = torch.randint(0, 5, (2, 9, 7), generator=gen)
        label[torch.rand(2, 9, 7, generator=gen) < ignored] = IGNORE
        loss_module = CrossEntropyLoss(**loss_cfg)
        weight = None
        if sampler_cfg:
            context = type("Head", (), dict(ignore_index=IGNORE, loss_decode=loss_module))()
            sampler = TASK_UTILS.build(dict(sampler_cfg, context=context))
            weight = sampler.sample(logits, label.unsqueeze(1))
        loss = loss_module(logits, label, weight=weight, ignore_index=IGNORE)
        loss.backward()
        t.update({f"{name}.logits": f32(logits), f"{name}.label": label.to(torch.int64),
                  f"{name}.loss": f32(loss.reshape(1)), f"{name}.dlogits": f32(logits.grad)})
        metadata[name] = json.dumps(dict(loss_decode=dict(type="CrossEntropyLoss", **loss_cfg),
                                         **({"sampler": sampler_cfg} if sampler_cfg else {})))
    save(t, "losses.safetensors", metadata)


SCHEDULE_CASES = [
    ("poly_3_steps", 1.0, 3, [dict(type="PolyLR", eta_min=0.01, power=0.9, begin=0, end=3, by_epoch=False)]),
    # ocrnet_r101-d8_8xb2-80k's shape: decay over the first half, then stay at eta_min
    ("poly_half_run", 0.02, 20, [dict(type="PolyLR", eta_min=2e-4, power=0.9, begin=0, end=10, by_epoch=False)]),
    ("linear_warmup_then_poly", 0.01, 30, [
        dict(type="LinearLR", start_factor=1e-3, begin=0, end=6, by_epoch=False),
        dict(type="PolyLR", eta_min=1e-4, power=1.0, begin=6, end=30, by_epoch=False)]),
]


def schedules():
    cases = []
    for name, lr, iters, schedulers in SCHEDULE_CASES:
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=lr)
        built = [{"PolyLR": PolyLR, "LinearLR": LinearLR}[s["type"]](
            optimizer, **{k: v for k, v in s.items() if k != "type"}) for s in schedulers]
        rates = []
        for _ in range(iters):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            for s in built:
                s.step()
        cases.append(dict(name=name, lr=lr, max_iters=iters, param_scheduler=schedulers, rates=rates))
    path = os.path.join(OUT, "schedules.json")
    with open(path, "w") as fh:
        json.dump(dict(versions=mmseg_env.versions(), cases=cases), fh, indent=1)
    print(f"wrote {path}")


RESIZE_CASES = [
    # name, source (h, w), scale (w, h): ×1.25 up, non-integer down, exact halves, portrait, tiny
    ("up_1_25", (37, 53), (66, 46)), ("up_1_25_even", (48, 64), (80, 60)), ("down_0_51", (100, 120), (61, 51)),
    ("down_half", (128, 256), (128, 64)), ("up_3", (33, 33), (99, 99)), ("portrait", (90, 40), (200, 100)),
    ("tiny", (5, 7), (23, 16)), ("cityscapes_like", (96, 192), (150, 75)),
]


def resizes():
    from mmseg.registry import TRANSFORMS
    gen = np.random.default_rng(5)
    t, metadata = {}, {"versions": json.dumps(mmseg_env.versions())}
    for name, (h, w), scale in RESIZE_CASES:
        image = gen.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = gen.integers(0, 256, (h, w), dtype=np.uint8)
        resize = TRANSFORMS.build(dict(type="Resize", scale=scale, keep_ratio=True))
        out = resize(dict(img=image.copy(), gt_seg_map=label.copy(), seg_fields=["gt_seg_map"],
                          img_shape=(h, w), ori_shape=(h, w)))
        for key, value in (("image", image), ("label", label), ("resized_image", out["img"]),
                           ("resized_label", out["gt_seg_map"])):
            t[f"{name}.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
        metadata[name] = json.dumps({"scale": list(scale)})
    save(t, "resize.safetensors", metadata)


def checkpoint_end_to_end():
    import subprocess

    import cv2
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.runner import save_checkpoint
    from mmseg_config import convert_config

    folder = os.path.join(OUT, "checkpoint")
    name = "ocrnet_hr18s_4xb2-40k_cityscapes-512x1024"
    cfg = Config.fromfile(os.path.join(mmseg_env.config_dir(), "ocrnet", name + ".py"))
    model = plain_bn(cfg.model.to_dict())
    model["pretrained"] = None
    hrnet_reduced((4, 8, 16, 32), 8)(model)
    gen = np.random.default_rng(11)
    images, city = {}, "frankfurt"
    for split in ("leftImg8bit", "gtFine"):
        os.makedirs(os.path.join(folder, split, "val", city), exist_ok=True)
    for i in range(3):
        stem = f"{city}_{i:06d}_000019"
        # Smooth random colour fields (block noise, blurred), so the network sees structure rather than noise.
        image = cv2.resize(gen.integers(0, 256, (8, 16, 3), dtype=np.uint8), (128, 64), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image.astype(int) + gen.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        label = gen.integers(0, 19, (64, 128), dtype=np.uint8)
        label[gen.random((64, 128)) < 0.1] = IGNORE
        image_path = os.path.join(folder, "leftImg8bit", "val", city, f"{stem}_leftImg8bit.png")
        label_path = os.path.join(folder, "gtFine", "val", city, f"{stem}_gtFine_labelTrainIds.png")
        cv2.imwrite(image_path, image)
        cv2.imwrite(label_path, label)
        images[stem] = (image_path, label_path)
    scale = (160, 80)
    for step in cfg.test_pipeline:
        if step["type"] == "Resize":
            step["scale"] = scale
    cfg.val_dataloader.dataset.pipeline = cfg.test_pipeline
    cfg.test_dataloader.dataset.pipeline = cfg.test_pipeline
    cfg.data_root = "Tests/Fixtures/mmseg/checkpoint"
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = cfg.data_root
    cfg.model = model

    net = build(model)
    perturb_norms(net, torch.Generator().manual_seed(11))
    pipeline = Compose(cfg.test_pipeline)
    samples = [pipeline(dict(img_path=image, seg_map_path=label, reduce_zero_label=False, seg_fields=[]))
               for image, label in images.values()]
    net.train()
    calibration = net.data_preprocessor(pseudo_collate(samples), False)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None   # cumulative average over the calibration pass
    with torch.no_grad():
        net(calibration["inputs"], calibration["data_samples"], mode="tensor")
    net.eval()
    save_checkpoint({"state_dict": net.state_dict(), "meta": {"mmseg_version": mmseg_env.versions()["mmseg"]}},
                    os.path.join(folder, "model.pth"))
    subprocess.run([sys.executable, os.path.join(ROOT, "Tools", "convert_pth.py"), os.path.join(folder, "model.pth"),
                    os.path.join(folder, "model.safetensors")], check=True)
    with open(os.path.join(folder, "config.yaml"), "w") as fh:
        fh.write(convert_config(cfg, name + " (reduced width, test Resize (160, 80): the end-to-end fixture)"))
    predictions = {}
    with torch.no_grad():
        for stem, sample in zip(images, samples):
            result = net.test_step(pseudo_collate([sample]))[0]
            assert tuple(result.pred_sem_seg.data.shape[1:]) == (64, 128)
            predictions[stem] = result.pred_sem_seg.data[0].to(torch.uint8).contiguous()
    # mmseg's tools/test.py --tta: the tta_pipeline's views through SegTTAModel.
    tta = MODELS.build(dict(cfg.tta_model, module=net))
    tta_pipeline = Compose(cfg.tta_pipeline)
    with torch.no_grad():
        for stem, (image, label) in images.items():
            views = tta_pipeline(dict(img_path=image, seg_map_path=label, reduce_zero_label=False, seg_fields=[]))
            result = tta.test_step(pseudo_collate([views]))[0]
            predictions[f"tta.{stem}"] = result.pred_sem_seg.data[0].to(torch.uint8).contiguous()
    save(predictions, "checkpoint/predictions.safetensors", {"versions": mmseg_env.versions(), "config": name})


def key_lists():
    configs, lists = {}, {}
    for name, _ in mmseg_env.ocrnet_configs():
        net = build(model_dict(name))
        layout = [dict(name=k, shape=list(v.shape), dtype={torch.float32: "F32", torch.int64: "I64"}[v.dtype])
                  for k, v in net.state_dict().items()]
        key = next((i for i, other in lists.items() if other == layout), None)
        if key is None:
            key = f"list{len(lists)}"
            lists[key] = layout
        configs[name] = key
    path = os.path.join(OUT, "keys.json")
    with open(path, "w") as fh:
        json.dump(dict(versions=mmseg_env.versions(), configs=configs, lists=lists), fh, separators=(",", ":"))
    print(f"wrote {path} ({len(configs)} configs, {len(lists)} distinct key lists)")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    only = set(sys.argv[1:])
    for case in CASES:
        if not only or case[0] in only:
            train_case(*case)
    if not only or "losses" in only:
        losses()
    if not only or "schedules" in only:
        schedules()
    if not only or "resize" in only:
        resizes()
    if not only or "checkpoint" in only:
        checkpoint_end_to_end()
    if not only or "keys" in only:
        key_lists()


if __name__ == "__main__":
    main()
