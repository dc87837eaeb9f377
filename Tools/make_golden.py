#!/usr/bin/env python3
"""Golden-data generator for the ocr-ddp Swift test suite.

Regenerate (from the repository root):

    python3 Tools/make_golden.py          # ops/
    python3 Tools/make_golden.py --bf16   # bf16/, printing PyTorch's bf16-autocast errors

Needs only torch, numpy and safetensors.
The script is deterministic (every fixture has its own fixed seed).

Numerics (see docs/TESTING.md): inputs and weights are drawn in float32;
references are computed in float64 from exactly those float32 values and stored
back as float32.  Integer tensors (labels, num_batches_tracked) are int64.

Produces, under Tests/Fixtures/:

ops/<case>.safetensors        single-op references: input(s), parameters, forward
                              output `y`, random upstream gradient `dy`, and the
                              gradients of sum(y * dy) (`dx`, `dweight`, `dbias`).
                              Op settings are in the safetensors metadata.
    conv_*      x, weight, [bias], y, dy, dx, dweight, [dbias]
                meta: stride, padding, dilation, bias ("1"/"0")
    bn_train / bn_eval
                x, weight, bias, running_mean, running_var, y, dy, dx, dweight,
                dbias, running_mean_after, running_var_after
                meta: training, eps, momentum
    resize_*    x, y, dy, dx          meta: out_h, out_w, align_corners
    softmax_*   x, y, dy, dx          meta: axis
    ce_plain / ce_weighted
                logits, label (I64), [class_weight], loss ([1]), dlogits
                meta: ignore_index, weighted
    maxpool*    x, y, dy, dx          meta: kernel, stride, padding

bf16/<case>.safetensors       (--bf16) per-op and whole-model references for the bf16 mode, with PyTorch's
                              own bf16-autocast errors in the metadata (docs/TESTING.md)

Whole-model references come from real mmsegmentation: Tools/make_golden_mmseg.py. The reduced OCRNet
re-written below (mmseg's state_dict keys) serves only the bf16 whole-model case; it computes the loss as the
official HRNet-OCR code does (mean over non-ignored pixels, one FCN pass), which the bf16 test selects.
"""

import json
import os
import sys

import numpy as np  # noqa: F401  (part of the declared toolchain; safetensors uses it)
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
OPS_DIR = os.path.join(FIXTURES, "ops")
BF16_DIR = os.path.join(FIXTURES, "bf16")

IGNORE_INDEX = 255


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def f32(t):
    """Detached, contiguous float32 copy for storage."""
    return t.detach().to(torch.float32).contiguous().clone()


def i64(t):
    return t.detach().to(torch.int64).contiguous().clone()


def meta(d):
    return {k: str(v) for k, v in d.items()}


def save(tensors, path, metadata):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    save_file(tensors, path, metadata=meta(metadata))
    canonicalize_header(path)


def canonicalize_header(path):
    """safetensors writes `__metadata__` in hash-map order, which changes from run to run.
    Rewrite the JSON header with sorted keys (same tensors, same data offsets, header padded
    with spaces to a multiple of 8) so regenerated fixtures are byte-identical."""
    with open(path, "rb") as fh:
        raw = fh.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        fh.write(data)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def leaf64(t32):
    """float64 leaf built from exactly the float32 values."""
    return t32.double().clone().requires_grad_(True)


# --------------------------------------------------------------------------------------
# 1. per-op fixtures
# --------------------------------------------------------------------------------------

def op_conv(name, seed, shape, cout, k, stride, padding, dilation, bias):
    torch.manual_seed(seed)
    n, cin, h, w = shape
    x = randn(*shape)
    weight = randn(cout, cin, k, k) * (1.0 / (cin * k * k) ** 0.5)
    b = randn(cout) * 0.1 if bias else None
    x64, w64 = leaf64(x), leaf64(weight)
    b64 = leaf64(b) if bias else None
    y64 = F.conv2d(x64, w64, b64, stride=stride, padding=padding, dilation=dilation)
    dy = randn(*y64.shape)
    (y64 * dy.double()).sum().backward()
    t = {"x": f32(x), "weight": f32(weight), "y": f32(y64), "dy": f32(dy),
         "dx": f32(x64.grad), "dweight": f32(w64.grad)}
    if bias:
        t["bias"] = f32(b)
        t["dbias"] = f32(b64.grad)
    save(t, os.path.join(OPS_DIR, name + ".safetensors"),
         dict(op="conv2d", stride=stride, padding=padding, dilation=dilation,
              bias="1" if bias else "0", kernel=k, seed=seed))


def op_bn(name, seed, training):
    torch.manual_seed(seed)
    shape = (3, 4, 5, 6)
    c = shape[1]
    x = randn(*shape) * 1.5 + 0.3
    weight = 1.0 + 0.2 * randn(c)
    bias = 0.2 * randn(c)
    running_mean = 0.5 * randn(c)
    running_var = 0.5 + torch.rand(c, dtype=torch.float32)
    eps, momentum = 1e-5, 0.1
    x64, w64, b64 = leaf64(x), leaf64(weight), leaf64(bias)
    rm64, rv64 = running_mean.double().clone(), running_var.double().clone()
    y64 = F.batch_norm(x64, rm64, rv64, w64, b64, training=training,
                       momentum=momentum, eps=eps)
    dy = randn(*y64.shape)
    (y64 * dy.double()).sum().backward()
    t = {"x": f32(x), "weight": f32(weight), "bias": f32(bias),
         "running_mean": f32(running_mean), "running_var": f32(running_var),
         "y": f32(y64), "dy": f32(dy), "dx": f32(x64.grad),
         "dweight": f32(w64.grad), "dbias": f32(b64.grad),
         "running_mean_after": f32(rm64), "running_var_after": f32(rv64)}
    save(t, os.path.join(OPS_DIR, name + ".safetensors"),
         dict(op="batch_norm", training="1" if training else "0", eps="1e-05",
              momentum="0.1", seed=seed,
              note="running_var is updated with the unbiased batch variance"))


def op_resize(name, seed, shape, out_hw, align_corners):
    torch.manual_seed(seed)
    x = randn(*shape)
    x64 = leaf64(x)
    y64 = F.interpolate(x64, size=out_hw, mode="bilinear", align_corners=align_corners)
    dy = randn(*y64.shape)
    (y64 * dy.double()).sum().backward()
    save({"x": f32(x), "y": f32(y64), "dy": f32(dy), "dx": f32(x64.grad)},
         os.path.join(OPS_DIR, name + ".safetensors"),
         dict(op="resize_bilinear", out_h=out_hw[0], out_w=out_hw[1],
              align_corners="1" if align_corners else "0", seed=seed))


def op_softmax(name, seed, shape, axis):
    torch.manual_seed(seed)
    x = randn(*shape) * 2.0
    x64 = leaf64(x)
    y64 = F.softmax(x64, dim=axis)
    dy = randn(*y64.shape)
    (y64 * dy.double()).sum().backward()
    save({"x": f32(x), "y": f32(y64), "dy": f32(dy), "dx": f32(x64.grad)},
         os.path.join(OPS_DIR, name + ".safetensors"),
         dict(op="softmax", axis=axis, seed=seed))


def op_ce(name, seed, weighted):
    torch.manual_seed(seed)
    n, k, h, w = 2, 5, 6, 7
    logits = randn(n, k, h, w) * 2.0
    label = torch.randint(0, k, (n, h, w), dtype=torch.int64)
    label[torch.rand(n, h, w) < 0.2] = IGNORE_INDEX
    cw = (0.5 + 1.5 * torch.rand(k, dtype=torch.float32)) if weighted else None
    l64 = leaf64(logits)
    loss = F.cross_entropy(l64, label, weight=cw.double() if weighted else None,
                           ignore_index=IGNORE_INDEX, reduction="mean")
    loss.backward()
    t = {"logits": f32(logits), "label": i64(label), "loss": f32(loss.reshape(1)),
         "dlogits": f32(l64.grad)}
    if weighted:
        t["class_weight"] = f32(cw)
    save(t, os.path.join(OPS_DIR, name + ".safetensors"),
         dict(op="cross_entropy", ignore_index=IGNORE_INDEX, weighted="1" if weighted else "0",
              reduction="mean over non-ignored pixels: sum(w[y_i]*nll_i)/sum(w[y_i])",
              num_ignored=int((label == IGNORE_INDEX).sum()), seed=seed))


def op_maxpool(name, seed, shape):
    torch.manual_seed(seed)
    x = randn(*shape)
    x64 = leaf64(x)
    y64 = F.max_pool2d(x64, kernel_size=3, stride=2, padding=1)
    dy = randn(*y64.shape)
    (y64 * dy.double()).sum().backward()
    save({"x": f32(x), "y": f32(y64), "dy": f32(dy), "dx": f32(x64.grad)},
         os.path.join(OPS_DIR, name + ".safetensors"),
         dict(op="max_pool2d", kernel=3, stride=2, padding=1, seed=seed))


def make_op_fixtures():
    # conv: (name, shape, cout, k, stride, padding, dilation, bias)
    convs = [
        ("conv_k3s1p1_bias", (2, 3, 9, 11), 4, 3, 1, 1, 1, True),
        ("conv_k3s2p1", (2, 5, 10, 9), 6, 3, 2, 1, 1, False),
        ("conv_k3s1p2d2", (2, 4, 9, 9), 3, 3, 1, 2, 2, False),
        ("conv_k3s1p4d4", (1, 3, 12, 10), 4, 3, 1, 4, 4, False),
        ("conv_k1s1_bias", (2, 6, 5, 7), 4, 1, 1, 0, 1, True),
        ("conv_k1s2", (2, 4, 9, 8), 5, 1, 2, 0, 1, False),
        ("conv_k3s2p0", (1, 2, 8, 8), 3, 3, 2, 0, 1, False),
    ]
    for i, (name, shape, cout, k, s, p, d, b) in enumerate(convs):
        op_conv(name, 1000 + i, shape, cout, k, s, p, d, b)

    op_bn("bn_train", 1100, True)
    op_bn("bn_eval", 1101, False)

    resizes = [
        ("resize_up_acfalse", (2, 3, 5, 7), (11, 13), False),
        ("resize_up_actrue", (2, 3, 5, 7), (11, 13), True),
        ("resize_down_acfalse", (2, 3, 17, 19), (6, 8), False),
        ("resize_down_actrue", (2, 3, 17, 19), (6, 8), True),
        ("resize_x8_acfalse", (1, 2, 8, 8), (64, 64), False),
        ("resize_mixed_acfalse", (1, 2, 6, 20), (13, 7), False),
    ]
    for i, (name, shape, hw, ac) in enumerate(resizes):
        op_resize(name, 1200 + i, shape, hw, ac)

    op_softmax("softmax_axis1", 1300, (2, 5, 3, 4), 1)
    op_softmax("softmax_axis2", 1301, (2, 3, 7), 2)

    op_ce("ce_plain", 1400, False)
    op_ce("ce_weighted", 1401, True)

    op_maxpool("maxpool", 1500, (2, 3, 9, 10))
    op_maxpool("maxpool_even", 1501, (1, 2, 8, 8))


# --------------------------------------------------------------------------------------
# 2. the model (state_dict keys == mmsegmentation's)
# --------------------------------------------------------------------------------------
# Key layout reproduced (registration order == state_dict order):
#   backbone.stem.{0,3,6}.weight, backbone.stem.{1,4,7}.{BN}        deep stem, ReLU at 2,5,8
#   backbone.layerN.M.conv1.weight, .bn1, .conv2, .bn2, [.conv3, .bn3], [.downsample.0.weight, .downsample.1]
#   decode_head.0.conv_seg.{weight,bias}, decode_head.0.convs.0.{conv.weight, bn}
#   decode_head.1.conv_seg.{weight,bias},
#   decode_head.1.object_context_block.{key_project.{0,1}, query_project.{0,1}, value_project,
#                                       out_project, bottleneck}.{conv.weight, bn},
#   decode_head.1.bottleneck.{conv.weight, bn}
# (mmseg's BaseDecodeHead registers conv_seg in its own __init__, before the subclass'
# layers; SelfAttentionBlock builds key_project before query_project.)


class ConvModule(nn.Module):
    """conv (no bias) -> BN -> ReLU, keys `conv.weight`, `bn.*`."""

    def __init__(self, cin, cout, k, stride=1, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding,
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, dilation, downsample):
        super().__init__()
        # 3x3 (stride, dilation) then 3x3 (no dilation, padding 1), as mmseg/torchvision
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self):
        return self.bn2

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, dilation, downsample):
        super().__init__()
        # "pytorch" style: the stride sits on the 3x3 conv
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def last_bn(self):
        return self.bn3

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


ARCH = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class ResNetV1cD8(nn.Module):
    STRIDES = (1, 2, 1, 1)
    DILATIONS = (1, 1, 2, 4)

    def __init__(self, depth, base_channels):
        super().__init__()
        block, counts = ARCH[depth]
        stem = base_channels  # mmseg default: stem_channels == base_channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem // 2), nn.ReLU(),
            nn.Conv2d(stem // 2, stem // 2, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem // 2), nn.ReLU(),
            nn.Conv2d(stem // 2, stem, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = stem
        self.out_channels = []
        for i, n in enumerate(counts):
            planes = base_channels * 2 ** i
            stride, dilation = self.STRIDES[i], self.DILATIONS[i]
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion))
            # contract_dilation: the first block of a dilated stage uses dilation // 2
            first_dilation = dilation // 2 if dilation > 1 else dilation
            blocks = [block(inplanes, planes, stride, first_dilation, downsample)]
            inplanes = planes * block.expansion
            for _ in range(1, n):
                blocks.append(block(inplanes, planes, 1, dilation, None))
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.out_channels.append(inplanes)

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            outs.append(x)
        return outs


class FCNHead(nn.Module):
    """mmseg FCNHead(num_convs=1, concat_input=False, kernel_size=3 or 1)."""

    def __init__(self, cin, channels, num_classes, dropout=0.0, kernel=3):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)  # registered first (BaseDecodeHead)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.convs = nn.Sequential(ConvModule(cin, channels, kernel, padding=kernel // 2))

    def forward(self, x):
        y = self.convs(x)
        if self.dropout is not None:
            y = self.dropout(y)
        return self.conv_seg(y)


class ObjectAttentionBlock(nn.Module):
    """mmseg SelfAttentionBlock(key_query_num_convs=2, value_out_num_convs=1, norm on,
    matmul_norm, with_out) + 1x1 bottleneck on concat[context, feats]."""

    def __init__(self, cin, mid):
        super().__init__()
        self.mid = mid
        self.key_project = nn.Sequential(ConvModule(cin, mid, 1), ConvModule(mid, mid, 1))
        self.query_project = nn.Sequential(ConvModule(cin, mid, 1), ConvModule(mid, mid, 1))
        self.value_project = ConvModule(cin, mid, 1)
        self.out_project = ConvModule(mid, cin, 1)
        self.bottleneck = ConvModule(cin * 2, cin, 1)

    def attention(self, query_feats, key_feats):
        b, _, h, w = query_feats.shape
        q = self.query_project(query_feats).flatten(2).transpose(1, 2)   # B, hw, mid
        k = self.key_project(key_feats).flatten(2)                      # B, mid, K
        v = self.value_project(key_feats).flatten(2).transpose(1, 2)     # B, K, mid
        sim = torch.softmax(torch.bmm(q, k) * (self.mid ** -0.5), dim=-1)  # over objects
        ctx = torch.bmm(sim, v).transpose(1, 2).reshape(b, self.mid, h, w)
        return self.out_project(ctx)

    def forward(self, query_feats, key_feats):
        context = self.attention(query_feats, key_feats)
        return self.bottleneck(torch.cat([context, query_feats], dim=1)), context


def spatial_gather(feats, probs, scale=1.0):
    """f_k = sum_i softmax_i(scale * L_k,i) X_i ; returns B x C x K x 1."""
    b, c = feats.shape[:2]
    p = torch.softmax(scale * probs.flatten(2), dim=2)           # B, K, hw
    g = torch.bmm(p, feats.flatten(2).transpose(1, 2))           # B, K, C
    return g.transpose(1, 2).contiguous().unsqueeze(3)


class OCRHead(nn.Module):
    def __init__(self, cin, channels, ocr_channels, num_classes, dropout=0.0):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)  # registered first (BaseDecodeHead)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.object_context_block = ObjectAttentionBlock(channels, ocr_channels)
        self.bottleneck = ConvModule(cin, channels, 3, padding=1)

    def forward(self, x, soft_regions):
        feats = self.bottleneck(x)
        gathered = spatial_gather(feats, soft_regions)
        obj_ctx, ctx = self.object_context_block(feats, gathered)
        y = obj_ctx if self.dropout is None else self.dropout(obj_ctx)
        self.inter = {"ocr_feats": feats, "ocr_gathered": gathered,
                      "ocr_context": ctx, "ocr_object_context": obj_ctx}
        return self.conv_seg(y)


class OCRNet(nn.Module):
    def __init__(self, depth, base_channels, fcn_channels, ocr_channels, ocr_mid, num_classes):
        super().__init__()
        self.backbone = ResNetV1cD8(depth, base_channels)
        c3, c4 = self.backbone.out_channels[2], self.backbone.out_channels[3]
        self.decode_head = nn.ModuleList([
            FCNHead(c3, fcn_channels, num_classes),
            OCRHead(c4, ocr_channels, ocr_mid, num_classes)])

    def forward(self, x):
        feats = self.backbone(x)
        aux = self.decode_head[0](feats[2])           # computed once, undetached
        ocr = self.decode_head[1](feats[3], aux)
        return feats, aux, ocr


def init_model(model, residual_gamma=0.1):
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if name.endswith("conv_seg"):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            nn.init.constant_(m.last_bn().weight, residual_gamma)


def seg_loss(logits, label):
    up = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, label, ignore_index=IGNORE_INDEX, reduction="mean")


def reference_step(model, cfg):
    """Random input and labels (10 % ignored), the float32 weights, then one float64 training forward and backward
    with loss 0.4·aux + 1.0·ocr. Returns the tensors to store, the float64 model and its float32 state dict."""
    x = randn(cfg["batch"], 3, cfg["height"], cfg["width"])
    label = torch.randint(0, cfg["num_classes"], (cfg["batch"], cfg["height"], cfg["width"]),
                          dtype=torch.int64)
    label[torch.rand(cfg["batch"], cfg["height"], cfg["width"]) < 0.1] = IGNORE_INDEX

    t = {"input": f32(x), "label": i64(label)}
    sd = model.state_dict()
    for k, v in sd.items():
        t["param." + k] = i64(v) if k.endswith("num_batches_tracked") else f32(v)

    model = model.double().train()
    feats, aux, ocr = model(x.double())
    loss_aux = seg_loss(aux, label)
    loss_ocr = seg_loss(ocr, label)
    loss = 0.4 * loss_aux + 1.0 * loss_ocr
    loss.backward()

    for i, f in enumerate(feats):
        t[f"feat.c{i + 1}"] = f32(f)
    t["out.aux_logits"] = f32(aux)
    t["out.ocr_logits"] = f32(ocr)
    t["out.loss_aux"] = f32(loss_aux.reshape(1))
    t["out.loss_ocr"] = f32(loss_ocr.reshape(1))
    t["out.loss"] = f32(loss.reshape(1))
    for k, p in model.named_parameters():
        assert p.grad is not None, k
        t["grad." + k] = f32(p.grad)
    for k, v in model.state_dict().items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            t["after." + k] = i64(v) if k.endswith("num_batches_tracked") else f32(v)
    return t, model, sd


def reduced_model_config(depth):
    """The reduced OCRNet of the model fixtures and its batch: base 16, FCN 32, OCR 64/32, 5 classes, 2 × 64×64."""
    return dict(depth=depth, base_channels=16, fcn_channels=32, ocr_channels=64,
                ocr_mid_channels=32, num_classes=5, batch=2, height=64, width=64)


def reduced_model(cfg):
    return OCRNet(cfg["depth"], cfg["base_channels"], cfg["fcn_channels"], cfg["ocr_channels"],
                  cfg["ocr_mid_channels"], cfg["num_classes"])


def rel_norm(a, truth):
    a, truth = a.double(), truth.double()
    return ((a - truth).norm() / truth.norm()).item()


def bf16_conv(name, seed, shape, cout, k, stride, padding, dilation):
    torch.manual_seed(seed)
    x = randn(*shape)
    weight = randn(cout, shape[1], k, k) * (2.0 / (shape[1] * k * k)) ** 0.5
    x64, w64 = leaf64(x), leaf64(weight)
    y64 = F.conv2d(x64, w64, stride=stride, padding=padding, dilation=dilation)
    dy = randn(*y64.shape)
    (y64 * dy.double()).sum().backward()
    x32, w32 = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = F.conv2d(x32, w32, stride=stride, padding=padding, dilation=dilation)
    (y.float() * dy).sum().backward()
    errors = {"y": rel_norm(y.float(), y64), "dx": rel_norm(x32.grad, x64.grad),
              "dweight": rel_norm(w32.grad, w64.grad)}
    save({"x": f32(x), "weight": f32(weight), "y": f32(y64), "dy": f32(dy), "dx": f32(x64.grad),
          "dweight": f32(w64.grad)}, os.path.join(BF16_DIR, name + ".safetensors"),
         dict(op="conv2d", stride=stride, padding=padding, dilation=dilation, seed=seed,
              **{f"pytorch_bf16_rel_norm_{k}": f"{v:.3e}" for k, v in errors.items()}))
    return errors


def bf16_bmm(name, seed, batch, a_shape, b_shape, trans_a, trans_b, alpha):
    """C = alpha·op(A)·op(B) per batch entry, A and B as stored (BatchedMatMul's semantics)."""
    torch.manual_seed(seed)
    a, b = randn(batch, *a_shape), randn(batch, *b_shape)
    op = lambda t, trans: t.transpose(1, 2) if trans else t
    a64, b64 = leaf64(a), leaf64(b)
    c64 = alpha * torch.bmm(op(a64, trans_a), op(b64, trans_b))
    dc = randn(*c64.shape)
    (c64 * dc.double()).sum().backward()
    a32, b32 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = alpha * torch.bmm(op(a32, trans_a), op(b32, trans_b))
    (c.float() * dc).sum().backward()
    errors = {"c": rel_norm(c.float(), c64), "da": rel_norm(a32.grad, a64.grad), "db": rel_norm(b32.grad, b64.grad)}
    save({"a": f32(a), "b": f32(b), "c": f32(c64), "dc": f32(dc), "da": f32(a64.grad), "db": f32(b64.grad)},
         os.path.join(BF16_DIR, name + ".safetensors"),
         dict(op="bmm", trans_a=int(trans_a), trans_b=int(trans_b), alpha=repr(alpha), seed=seed,
              **{f"pytorch_bf16_rel_norm_{k}": f"{v:.3e}" for k, v in errors.items()}))
    return errors


def bf16_model(depth, seed, fcn_classifier_std):
    """One training step of the reduced OCRNet in float64 (truth) and under PyTorch's bf16 autocast, from the same
    float32 weights and batch; the FCN classifier at `fcn_classifier_std` (docs/TESTING.md: at mmseg's 0.01 the OCR
    softmax is near-uniform and bf16 rounding turns into O(1) gradient noise, in PyTorch too)."""
    cfg = reduced_model_config(depth)
    torch.manual_seed(seed)
    model = reduced_model(cfg)
    init_model(model)
    nn.init.normal_(model.decode_head[0].conv_seg.weight, 0.0, fcn_classifier_std)
    model32 = reduced_model(cfg)
    model32.load_state_dict(model.state_dict())
    t, model64, _ = reference_step(model, cfg)
    model32.train()
    label = t["label"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, aux, ocr = model32(t["input"])
        loss_aux, loss_ocr = seg_loss(aux.float(), label), seg_loss(ocr.float(), label)
        loss = 0.4 * loss_aux + 1.0 * loss_ocr
    loss.backward()
    diff2 = ref2 = 0.0
    worst = (0.0, "")
    for k, p in model32.named_parameters():
        truth = t["grad." + k].double()
        d = (p.grad.double() - truth).norm().item()
        diff2 += d * d
        ref2 += truth.norm().item() ** 2
        worst = max(worst, (d / truth.norm().item(), k))
    stats = max(rel_norm(v, t["after." + k]) for k, v in model32.state_dict().items()
                if k.endswith(("running_mean", "running_var")))
    errors = {"gradient_whole": (diff2 / ref2) ** 0.5, "gradient_worst_tensor": worst[0],
              "loss": abs(loss.item() - t["out.loss"].item()) / abs(t["out.loss"].item()), "bn_stats": stats}
    kept = {k: v for k, v in t.items() if not k.startswith(("feat.", "out.aux", "out.ocr"))}
    md = dict(cfg)
    md.update(dict(seed=seed, dtype_reference="float64", fcn_classifier_std=fcn_classifier_std,
                   residual_last_bn_gamma="0.1", dropout="0", pytorch_bf16_worst_tensor_name=worst[1],
                   **{f"pytorch_bf16_{k}": f"{v:.3e}" for k, v in errors.items()}))
    save(kept, os.path.join(BF16_DIR, f"r{depth}_fcn_std{fcn_classifier_std:g}.safetensors"), md)
    return errors, worst[1]


def make_bf16_fixtures():
    """Tests/Fixtures/bf16/: convolutions of the shapes the networks have (64 channels at 16×16 and the like, so
    Winograd applies), the OCR head's three matrix products, and one whole-model step."""
    convs = [  # name, shape, cout, k, stride, padding, dilation
        ("conv3x3_64", (2, 64, 16, 16), 64, 3, 1, 1, 1),
        ("conv3x3_d2_64_48", (1, 64, 12, 14), 48, 3, 1, 2, 2),
        ("conv3x3_s2_32_64", (2, 32, 16, 16), 64, 3, 2, 1, 1),
        ("conv1x1_128_64", (2, 128, 12, 12), 64, 1, 1, 0, 1),
    ]
    for i, (name, shape, cout, k, s, p, d) in enumerate(convs):
        print(f"bf16/{name}: PyTorch bf16 autocast rel. norm errors {bf16_conv(name, 1600 + i, shape, cout, k, s, p, d)}")
    # OCR head at C=64, M=32, K=19 classes, 16×16 features (hw 256): gather, similarity, attend.
    bmms = [("bmm_gather", 2, (64, 256), (19, 256), False, True, 1.0),
            ("bmm_similarity", 2, (32, 256), (32, 19), True, False, 32 ** -0.5),
            ("bmm_attend", 2, (32, 19), (256, 19), False, True, 1.0)]
    for i, (name, batch, a, b, ta, tb, alpha) in enumerate(bmms):
        print(f"bf16/{name}: PyTorch bf16 autocast rel. norm errors {bf16_bmm(name, 1700 + i, batch, a, b, ta, tb, alpha)}")
    errors, worst = bf16_model(50, 50, 1.0)
    print(f"bf16/r50_fcn_std1: PyTorch bf16 autocast step errors {errors} (worst tensor {worst})")

def main():
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if sys.argv[1:] == ["--bf16"]:
        make_bf16_fixtures()
        return 0
    make_op_fixtures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
