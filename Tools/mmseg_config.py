#!/usr/bin/env python3
"""Writes an mmsegmentation config as an ocr-ddp YAML config.

    python3 Tools/mmseg_config.py MMSEG_CONFIG.py > Configs/NAME.yaml
    python3 Tools/mmseg_config.py --all Configs      # every OCRNet config of the installed mmseg, under its name

mmengine's Config resolves `_base_`; then every key of the resolved config is either carried over or checked:

- `model` is carried over as mmseg writes it, minus `data_preprocessor`; ocr-ddp reads mmseg's model keys with
  mmseg's meaning and rejects values it does not implement, naming the key.
- The data, optimizer, schedule and hook keys become ocr-ddp's `data`, `optimizer`, `optim_wrapper`,
  `param_scheduler`, `train_cfg`, `checkpoint` and `log` blocks.
- The rest (visualiser, GPU settings, the optional `--tta` pipeline) has no effect on what is computed; the header
  of the output says what was left out. A value this tool cannot express stops it with a message naming the key.

Needs mmsegmentation installed (Tools/mmseg_env.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmseg_env  # noqa: E402

import yaml  # noqa: E402
from mmengine.config import Config  # noqa: E402

DATASETS = {
    "CityscapesDataset": ("cityscapes", {"train": ("leftImg8bit/train", "gtFine/train"),
                                         "val": ("leftImg8bit/val", "gtFine/val")}),
    "ADE20KDataset": ("ade20k", {"train": ("images/training", "annotations/training"),
                                 "val": ("images/validation", "annotations/validation")}),
    "PascalVOCDataset": ("voc", {}),
}
# Transforms ocr-ddp's data loader performs itself (file loading, packing); their keys are checked below.
IMPLICIT_TRANSFORMS = {"LoadImageFromFile", "LoadAnnotations", "PackSegInputs"}


class Unsupported(Exception):
    pass


def require(condition, key, what):
    if not condition:
        raise Unsupported(f"{key}: {what}")


def plain(value):
    """Config values as YAML-ready Python values (tuples become lists)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def pipeline(steps, key, dataset_type):
    """mmseg transforms without the implicit ones, after checking those carry only what the dataset implies."""
    out = []
    for i, step in enumerate(steps):
        if step["type"] in IMPLICIT_TRANSFORMS:
            extra = {k: v for k, v in step.items() if k != "type"}
            if step["type"] == "LoadAnnotations":
                reduce = extra.pop("reduce_zero_label", False)
                require(reduce == (dataset_type == "ade20k"), f"{key}.{i}.reduce_zero_label",
                        "ocr-ddp applies reduce_zero_label exactly for ADE20K")
            extra.pop("backend_args", None)
            require(not extra, f"{key}.{i}", f"unsupported keys {sorted(extra)}")
            continue
        out.append(plain(step))
    return out


def data_block(cfg):
    dataset_type, splits = DATASETS.get(cfg.dataset_type, (None, None))
    require(dataset_type, "dataset_type", f"{cfg.dataset_type} is not Cityscapes, ADE20K or Pascal VOC")
    train = cfg.train_dataloader
    require(train.sampler == dict(type="InfiniteSampler", shuffle=True), "train_dataloader.sampler",
            "only a shuffled InfiniteSampler")
    block = dict(type=dataset_type, data_root=cfg.data_root.rstrip("/"), batch_size=train.batch_size)
    pre = cfg.model.data_preprocessor
    require(pre.type == "SegDataPreProcessor" and pre.bgr_to_rgb and pre.pad_val == 0 and pre.seg_pad_val == 255,
            "model.data_preprocessor", "only SegDataPreProcessor with bgr_to_rgb, pad_val 0, seg_pad_val 255")
    block.update(mean=list(pre.mean), std=list(pre.std), num_workers=train.num_workers)

    train_datasets = train.dataset.datasets if train.dataset.type == "ConcatDataset" else [train.dataset]
    split_names = []
    for i, d in enumerate(train_datasets):
        key = "train_dataloader.dataset" + (f".datasets.{i}" if len(train_datasets) > 1 else "")
        require(d.type == cfg.dataset_type, f"{key}.type", f"{d.type} is not {cfg.dataset_type}")
        require(d.data_root.rstrip("/") == block["data_root"], f"{key}.data_root", "differs from data_root")
        split_names.append(split_of(d, splits, "train", key))
        steps = pipeline(d.pipeline, f"{key}.pipeline", dataset_type)
        require(i == 0 or steps == block["train_pipeline"], f"{key}.pipeline", "differs between the datasets")
        block["train_pipeline"] = steps
    block["train_split"] = "+".join(split_names)
    crop = next((s["crop_size"] for s in block["train_pipeline"] if s["type"] == "RandomCrop"), None)
    require(crop is not None and list(pre.size) == list(crop), "model.data_preprocessor.size",
            "must equal the RandomCrop crop_size (ocr-ddp pads training batches to it)")

    for loader in ("val_dataloader", "test_dataloader"):
        d = cfg[loader]
        require(d.batch_size == 1, f"{loader}.batch_size", "evaluation runs one image at a time")
        require(d.sampler == dict(type="DefaultSampler", shuffle=False), f"{loader}.sampler", "only unshuffled")
        steps = pipeline(d.dataset.pipeline, f"{loader}.dataset.pipeline", dataset_type)
        require(steps == pipeline(cfg.test_pipeline, "test_pipeline", dataset_type), f"{loader}.dataset.pipeline",
                "differs from test_pipeline")
        split = split_of(d.dataset, splits, "val", f"{loader}.dataset")
        require(split == "val", f"{loader}.dataset", "ocr-ddp evaluates the val split")
        block["test_pipeline"] = steps
    block["val_split"] = "val"
    return block


def split_of(dataset, splits, default, key):
    """The split name a dataset entry reads: Cityscapes/ADE20K by their standard folders, VOC by its list file."""
    if "ann_file" in dataset and dataset.ann_file:
        name = os.path.splitext(os.path.basename(dataset.ann_file))[0]
        require(dataset.data_prefix.seg_map_path in ("SegmentationClass", "SegmentationClassAug"),
                f"{key}.data_prefix", "VOC labels come from SegmentationClass or SegmentationClassAug")
        require((dataset.data_prefix.seg_map_path == "SegmentationClassAug") == (name == "aug"),
                f"{key}.data_prefix.seg_map_path", "ocr-ddp reads SegmentationClassAug for the aug list only")
        return name
    prefix = (dataset.data_prefix.img_path, dataset.data_prefix.seg_map_path)
    require(splits.get(default) == prefix, f"{key}.data_prefix", f"{prefix} is not the standard {default} layout")
    return default


def convert(path):
    return convert_config(Config.fromfile(path), os.path.splitext(os.path.basename(path))[0])


def convert_config(cfg, name):
    """The YAML text of a resolved mmengine Config (`name` for the header)."""
    out = {}
    model = plain(cfg.model)
    model.pop("data_preprocessor")
    out["model"] = model
    out["data"] = data_block(cfg)

    wrapper = cfg.optim_wrapper
    require(wrapper.type in ("OptimWrapper", "AmpOptimWrapper"), "optim_wrapper.type", wrapper.type)
    require(cfg.get("optimizer") is None or plain(cfg.optimizer) == plain(wrapper.optimizer), "optimizer",
            "differs from optim_wrapper.optimizer")
    out["optim_wrapper"] = plain(wrapper)
    schedulers = cfg.param_scheduler if isinstance(cfg.param_scheduler, (list, tuple)) else [cfg.param_scheduler]
    out["param_scheduler"] = plain(schedulers)

    loop = cfg.train_cfg
    require(loop.type == "IterBasedTrainLoop", "train_cfg.type", "only IterBasedTrainLoop")
    out["train_cfg"] = dict(max_iters=loop.max_iters, val_interval=loop.val_interval)
    require(cfg.val_cfg.type == "ValLoop" and cfg.test_cfg.type == "TestLoop", "val_cfg/test_cfg", "ValLoop/TestLoop")
    for evaluator in ("val_evaluator", "test_evaluator"):
        require(plain(cfg[evaluator]) == dict(type="IoUMetric", iou_metrics=["mIoU"]), evaluator,
                "only IoUMetric with mIoU")
    hooks = cfg.default_hooks
    require(not hooks.checkpoint.by_epoch, "default_hooks.checkpoint.by_epoch", "iterations only")
    require(hooks.checkpoint.get("max_keep_ckpts", -1) == -1, "default_hooks.checkpoint.max_keep_ckpts",
            "mmseg's OCRNet configs keep every checkpoint")
    out["checkpoint"] = dict(interval=hooks.checkpoint.interval, max_keep=3)
    out["log"] = dict(interval=hooks.logger.interval)
    # `--tta` (mmseg's tools/test.py --tta): the views and their merge; img_ratios is already inside the pipeline.
    if cfg.get("tta_pipeline"):
        require(cfg.get("tta_model", {}).get("type") == "SegTTAModel", "tta_model.type", "only SegTTAModel")
        out["tta_model"] = plain(cfg.tta_model)
        out["tta_pipeline"] = plain(cfg.tta_pipeline)

    versions = mmseg_env.versions()
    header = [
        f"# {name}: generated by Tools/mmseg_config.py from mmsegmentation {versions['mmseg']}'s",
        f"# configs/ocrnet/{name}.py (mmengine {versions['mmengine']}). Regenerate rather than edit.",
        "# model: mmseg's dict as it resolves (its data_preprocessor is data.mean/std and the RandomCrop padding).",
        "# Differences by design: checkpoint.max_keep 3 (mmseg keeps every checkpoint); ranks communicate over",
        "# MPI, not env_cfg's nccl; model.pretrained names mmseg's ImageNet weights, which ocr-ddp loads from a",
        "# converted file (--load-from, README \"Pretrained backbones\"); under `eval --tta` ADE20K labels keep their",
        "# reduce_zero_label (mmseg's tta_pipeline leaves it out). Not carried over: visualizer and vis_backends,",
        "# log_processor, cudnn and worker start settings.",
    ]
    body = yaml.safe_dump(out, sort_keys=False, default_flow_style=None, width=118)
    return "\n".join(header) + "\n" + body


def main(argv):
    try:
        if argv[:1] == ["--all"] and len(argv) == 2:
            for name, path in mmseg_env.ocrnet_configs():
                with open(os.path.join(argv[1], name + ".yaml"), "w") as fh:
                    fh.write(convert(path))
                print(f"wrote {argv[1]}/{name}.yaml")
        elif len(argv) == 1:
            sys.stdout.write(convert(argv[0]))
        else:
            print(__doc__.strip().splitlines()[2], file=sys.stderr)
            return 2
    except Unsupported as e:
        print(f"mmseg_config.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
