#!/usr/bin/env python3
"""Golden vectors for `cace dense eval` (src/dense/metrics.rs) and the UnAV post-processing
(src/dense/nms.rs, src/dense/postprocess.rs), computed by the official UnAV code.

    git -C /work/.mirror/ttgeng233+UnAV/repo archive HEAD | tar -x -C /tmp/unav-official
    (cd /tmp/unav-official/libs/utils && python setup.py build_ext --inplace)   # nms_1d_cpu
    python tools/make_dense_eval_golden.py --official /tmp/unav-official --out tests/fixtures/dense

Writes (all JSON):
- unav_annotations.json: a small annotation file in the official format (two subsets, one of
  them spelt with a capital, overlapping events, duplicated annotations, a class without any
  ground truth and one with ground truth only outside the test split);
- unav_detections.json: detections in the official prediction format (ties in score between
  identical detections, zero-length and out-of-range segments, tIoU exactly at a threshold,
  labels without ground truth, a video without annotations);
- unav_map.json: the official ANETdetection result for split test, validation and all videos
  (thresholds, per-class AP, mAP, average mAP), plus a larger tie-free random case;
- unav_nms.json: candidates through the official batched_nms (soft/multiclass with the UnAV
  config, hard, class-agnostic with voting, a small max_seg_num) and through the official
  inference_single_video + postprocessing on random per-level logits and offsets.

The official code is imported from --official, never copied. Only ties whose order cannot
change the result are generated: the script checks that permuting the detection rows leaves
the official numbers unchanged (numpy's argsort order of equal scores is machine dependent).
"""
import argparse
import json
import os
import sys
import types

import numpy as np
import torch

np.float = float  # metrics.py uses np.float, removed in numpy 1.24


def load_official(root):
    sys.path.insert(0, root)
    sys.path.insert(0, os.path.join(root, "libs", "utils"))  # nms_1d_cpu
    from libs.utils.metrics import ANETdetection
    from libs.utils.nms import batched_nms
    from libs.modeling.multimodal_meta_archs import PtTransformer
    return ANETdetection, batched_nms, PtTransformer


def r3(x):
    return round(float(x), 3)


def make_annotations(rng):
    db = {}
    subsets = ["test"] * 5 + ["Validation"] * 3
    # labels 0..5 in test except 3 (only in validation); 6 nowhere
    for v, subset in enumerate(subsets):
        dur = r3(rng.uniform(20, 60))
        anns = []
        for _ in range(int(rng.integers(2, 6))):
            s = r3(rng.uniform(0, dur - 3))
            e = r3(min(dur, s + rng.uniform(1, 15)))
            lab = int(rng.choice([0, 1, 2, 4, 5])) if subset == "test" else int(rng.choice([1, 3]))
            anns.append({"segment": [s, e], "label": f"class{lab}", "label_id": lab})
        # an exact duplicate and one within the 1e-3 tolerance, and a same-span other class
        a = anns[0]
        anns.append(dict(a))
        anns.append({"segment": [a["segment"][0] + 0.0005, a["segment"][1] - 0.001],
                     "label": a["label"], "label_id": a["label_id"]})
        anns.append({"segment": list(a["segment"]), "label": "other", "label_id": 5})
        db[f"vid{v}"] = {"subset": subset, "duration": dur, "fps": 25.0, "annotations": anns}
    # boundary events: tIoU exactly 0.5 and exactly 0.3 with detections below
    db["vid0"]["annotations"].append({"segment": [10.0, 20.0], "label": "class2", "label_id": 2})
    db["vid1"]["annotations"].append({"segment": [0.0, 10.0], "label": "class4", "label_id": 4})
    return {"version": "golden", "database": db}


def make_detections(rng, ants):
    out = {}
    for vid, v in ants["database"].items():
        dets = []
        for a in v["annotations"]:
            for _ in range(int(rng.integers(0, 3))):
                s, e = a["segment"]
                j = rng.normal(0, 0.15 * (e - s), 2)
                lab = a["label_id"] if rng.random() < 0.8 else int(rng.integers(0, 8))
                dets.append({"segment": [r3(s + j[0]), r3(max(s + j[0], e + j[1]))],
                             "label_id": lab, "scores": round(float(rng.random()), 5)})
        for _ in range(int(rng.integers(2, 6))):
            s = r3(rng.uniform(-5, v["duration"]))
            dets.append({"segment": [s, r3(s + rng.uniform(0, 20))],
                         "label_id": int(rng.integers(0, 8)), "scores": round(float(rng.random()), 5)})
        out[vid] = dets
    d0 = out["vid0"]
    d0.append({"segment": [10.0, 15.0], "label_id": 2, "scores": 0.61})    # tIoU 0.5
    d0.append({"segment": [12.5, 12.5], "label_id": 2, "scores": 0.3})     # zero length
    d0.append({"segment": [-4.0, 100.0], "label_id": 0, "scores": 0.2})    # out of range
    out["vid1"].append({"segment": [0.0, 3.0], "label_id": 4, "scores": 0.77})  # tIoU 0.3
    # ties: identical detections (order-free), and one score shared across classes/videos
    tie = dict(out["vid2"][0])
    out["vid2"] += [dict(tie), dict(tie)]
    out["vid3"].append({"segment": [1.0, 4.0], "label_id": 1, "scores": 0.5})
    out["vid4"].append({"segment": [2.0, 9.0], "label_id": 2, "scores": 0.5})
    out["unknown_video"] = [{"segment": [0.0, 5.0], "label_id": 1, "scores": 0.9}]
    return {"database": out}


def random_case(rng, n_videos=30, n_classes=10):
    db, dets = {}, {}
    for v in range(n_videos):
        dur = r3(rng.uniform(10, 100))
        anns = []
        for _ in range(int(rng.integers(1, 6))):
            s = r3(rng.uniform(0, dur - 1))
            anns.append({"segment": [s, r3(min(dur, s + rng.uniform(0.5, 30)))],
                         "label_id": int(rng.integers(0, n_classes))})
        db[f"r{v}"] = {"subset": "test", "duration": dur, "annotations": anns}
        ds = []
        for a in anns:
            for _ in range(int(rng.integers(1, 6))):
                s, e = a["segment"]
                j = rng.normal(0, 0.2 * (e - s) + 0.1, 2)
                ds.append({"segment": [r3(s + j[0]), r3(max(s + j[0], e + j[1]))],
                           "label_id": a["label_id"] if rng.random() < 0.7 else int(rng.integers(0, n_classes)),
                           "scores": 0.0})
        for _ in range(int(rng.integers(5, 15))):
            s = r3(rng.uniform(0, dur))
            ds.append({"segment": [s, r3(s + rng.uniform(0.1, 20))],
                       "label_id": int(rng.integers(0, n_classes)), "scores": 0.0})
        dets[f"r{v}"] = ds
    n = sum(len(d) for d in dets.values())
    scores = rng.permutation(n) / n + 1e-4  # distinct
    k = 0
    for ds in dets.values():
        for d in ds:
            d["scores"] = round(float(scores[k]), 7)
            k += 1
    return {"database": db}, {"database": dets}


def official_map(ANETdetection, ant_file, pred_file, split):
    ev = ANETdetection(ant_file, split, tiou_thresholds=np.linspace(0.1, 0.9, 9), num_workers=1)
    mAP, avg = ev.evaluate(pred_file, verbose=False)
    classes = sorted(ev.activity_index.keys())
    return {"split": split, "tiou": [float(t) for t in ev.tiou_thresholds],
            "classes": [int(c) for c in classes], "ap": ev.ap.tolist(),
            "mAP": [float(m) for m in mAP], "average_mAP": float(avg)}


def check_order_free(ANETdetection, ant_file, preds, split, rng, tmp):
    ref = None
    for _ in range(6):
        db = {}
        for vid in rng.permutation(list(preds["database"].keys())):
            db[vid] = [preds["database"][vid][i] for i in rng.permutation(len(preds["database"][vid]))]
        with open(tmp, "w") as f:
            json.dump({"database": db}, f)
        r = official_map(ANETdetection, ant_file, tmp, split)
        assert ref is None or r["ap"] == ref["ap"], "result depends on the order of ties"
        ref = r


def nms_case(batched_nms, rng, n=60, n_classes=4):
    centers = rng.uniform(5, 60, 8)
    c = rng.choice(centers, n) + rng.normal(0, 1.0, n)
    w = rng.uniform(0.5, 8, n)
    segs = np.stack([c - w / 2, c + w / 2], 1).astype(np.float32)
    scores = rng.uniform(0.0005, 1, n).astype(np.float32)
    scores[5] = scores[6]  # a tie
    labels = rng.integers(0, n_classes, n)
    case = {"segs": segs.tolist(), "scores": scores.tolist(), "labels": labels.tolist(), "runs": []}
    configs = [
        dict(iou_threshold=0.7, min_score=0.001, max_seg_num=100, use_soft_nms=True, multiclass=True, sigma=0.4, voting_thresh=0.75),
        dict(iou_threshold=0.7, min_score=0.001, max_seg_num=10, use_soft_nms=True, multiclass=True, sigma=0.4, voting_thresh=0.75),
        dict(iou_threshold=0.1, min_score=0.01, max_seg_num=1000, use_soft_nms=True, multiclass=False, sigma=0.5, voting_thresh=0.75),
        dict(iou_threshold=0.5, min_score=0.05, max_seg_num=100, use_soft_nms=False, multiclass=True, sigma=0.5, voting_thresh=0.75),
        dict(iou_threshold=0.5, min_score=0.0, max_seg_num=100, use_soft_nms=False, multiclass=False, sigma=0.5, voting_thresh=0.0),
    ]
    for cfg in configs:
        s, sc, l = batched_nms(torch.from_numpy(segs), torch.from_numpy(scores), torch.from_numpy(labels), **cfg)
        case["runs"].append({"config": cfg, "segs": s.tolist(), "scores": sc.tolist(), "labels": l.tolist()})
    return case


def postprocess_case(PtTransformer, rng, class_aware, topk):
    C, max_len, strides, valid = 5, 32, [1, 2, 4], 27
    levels, points, masks, cls, offs = [], [], [], [], []
    for st in strides:
        t = max_len // st
        pts = torch.cat([torch.arange(0, max_len, st, dtype=torch.float)[:, None],
                         torch.tensor([[0.0, 4.0 * st]]).repeat(t, 1),
                         torch.full((t, 1), float(st))], 1)
        mask = torch.arange(t) * st < valid
        logit = torch.from_numpy(rng.normal(-3, 2.5, (t, C)).astype(np.float32))
        off = torch.from_numpy(rng.uniform(0, 3, (t, C, 2) if class_aware else (t, 2)).astype(np.float32))
        off[0] = 0.01  # segments below duration_thresh
        points.append(pts); masks.append(mask); cls.append(logit); offs.append(off)
        levels.append({"cls_logits": logit.flatten().tolist(), "offsets": off.flatten().tolist(),
                       "mask": mask.tolist(), "points": pts.flatten().tolist()})
    cfg = dict(pre_nms_thresh=0.001, pre_nms_topk=topk, iou_threshold=0.7, min_score=0.001,
               max_seg_num=100, nms_method="soft", nms_sigma=0.4, duration_thresh=0.05,
               multiclass_nms=True, voting_thresh=0.75)
    ns = types.SimpleNamespace(num_classes=C, class_aware=class_aware,
                               **{"test_" + k: v for k, v in cfg.items()})
    meta = {"fps": 25.0, "duration": 37.3, "feat_stride": 8, "feat_num_frames": 16}
    r = PtTransformer.inference_single_video(ns, points, masks, cls, offs)
    r.update(video_id="v", **meta)
    out = PtTransformer.postprocessing(ns, [r])[0]
    return {"num_classes": C, "class_aware": class_aware, "config": cfg, "meta": meta,
            "levels": levels,
            "candidates": {"segs": r["segments"].tolist(), "scores": r["scores"].tolist(),
                           "labels": r["labels"].tolist()},
            "segs": out["segments"].tolist(), "scores": out["scores"].tolist(),
            "labels": out["labels"].tolist()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True)
    ap.add_argument("--out", default="tests/fixtures/dense")
    a = ap.parse_args()
    ANETdetection, batched_nms, PtTransformer = load_official(a.official)
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(15)
    dump = lambda name, obj: json.dump(obj, open(os.path.join(a.out, name), "w"))

    ants = make_annotations(rng)
    preds = make_detections(rng, ants)
    ant_file, pred_file = os.path.join(a.out, "unav_annotations.json"), os.path.join(a.out, "unav_detections.json")
    dump("unav_annotations.json", ants)
    dump("unav_detections.json", preds)
    big_ants, big_preds = random_case(rng)
    big_ant_file, big_pred_file = os.path.join(a.out, "random_annotations.json"), os.path.join(a.out, "random_detections.json")
    dump("random_annotations.json", big_ants)
    dump("random_detections.json", big_preds)
    tmp = "/tmp/_dense_golden_perm.json"
    results = []
    for split in ["test", "validation", None]:
        check_order_free(ANETdetection, ant_file, preds, split, rng, tmp)
        results.append(official_map(ANETdetection, ant_file, pred_file, split))
    results.append(dict(official_map(ANETdetection, big_ant_file, big_pred_file, "test"), files="random"))
    dump("unav_map.json", results)

    nms = {"nms": [nms_case(batched_nms, rng), nms_case(batched_nms, rng, n=150, n_classes=3)],
           "postprocess": [postprocess_case(PtTransformer, rng, True, 2000),
                           postprocess_case(PtTransformer, rng, False, 20)]}
    dump("unav_nms.json", nms)
    for r in results:
        print(r.get("files", "unav"), r["split"], ["%.4f" % m for m in r["mAP"]], "avg %.6f" % r["average_mAP"])


if __name__ == "__main__":
    main()
