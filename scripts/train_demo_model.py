#!/usr/bin/env python
"""Train the toy demo BridgeTower on synthetic shapes and write ``sample_data/demo-model/``.

One shared backbone: a ``BridgeTowerForContrastiveLearning`` (ITC heads) plus a ``BridgeTowerITMHead`` on the
same ``bridgetower`` module's ``pooler_output``. Loss = the contrastive model's own ITC loss + ITM
cross-entropy with ALBEF-style hard negatives (for each pair, one negative image sampled by softmax of the
batch's text->image similarity and one negative text by image->text similarity, positive excluded).

Then it reloads the saved checkpoint through the HF classes and the saved processor and evaluates text->image
retrieval on the held-out sample set (``sample_data/images/captions.csv``): ITC cosine top-N shortlist, then
ITM rerank of the shortlist, Recall@1/5/10 for both. Writes the model card with the measured numbers.

    python scripts/train_demo_model.py --steps 3000 --clean-steps 1500   # the shipped model (2 threads)

The model card records the exact command of a run; with the same command and thread count a run is
bit-for-bit repeatable (seeded data, deterministic algorithms).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bt_search.search.evaluate import read_captions, recall_at_k
from bt_search_dev import demo_data
from bt_search_dev.checkpoints import merged_state_dict, save_checkpoint, tiny_config, train_bpe_tokenizer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "sample_data" / "demo-model"
DEFAULT_IMAGES = ROOT / "sample_data" / "images"
VAL_SEED = 777  # validation set seen during training; the sample set (another seed) is only used at the end
MAX_TEXT_LEN = 24


# ---------------------------------------------------------------- metrics


def ranks_of(ranked_ids: Sequence[Sequence[int]], true_ids: Sequence[int]) -> list[int | None]:
    """1-based rank of each query's true id in its ranking (None: not in it), as evaluate.recall_at_k takes."""
    if len(ranked_ids) != len(true_ids):
        raise ValueError("one ranking per query")
    return [list(r).index(t) + 1 if t in r else None for r, t in zip(ranked_ids, true_ids)]


def rerank(shortlist: Sequence[int], scores: Sequence[float]) -> list[int]:
    """Order a shortlist by score, highest first; ties keep shortlist order."""
    order = sorted(range(len(shortlist)), key=lambda i: (-scores[i], i))
    return [shortlist[i] for i in order]


# ---------------------------------------------------------------- data -> tensors


def pixel_tensor(images: Sequence[Image.Image], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """What BridgeTowerProcessor gives for RGB images already at the model's size: /255, normalise."""
    arr = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images])).permute(0, 3, 1, 2)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (arr.float() / 255.0 - m) / s


def encode_texts(tokenizer, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TEXT_LEN, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    itc_model,
    itm_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    tokenizer,
    pixels: torch.Tensor,
    captions: Sequence[str],
    shortlist: int = 20,
    chunk: int = 128,
) -> dict[str, dict[int, float]]:
    """Text->image retrieval, caption i's true image is image i. ITC shortlist, then ITM rerank."""
    ids, am = encode_texts(tokenizer, captions)
    n = len(captions)
    img_emb, txt_emb = [], []
    for s in range(0, n, chunk):  # image embeddings depend on the image alone: pair with any text
        e = slice(s, min(n, s + chunk))
        k = e.stop - e.start
        img_emb.append(
            itc_model(
                input_ids=ids[:1].expand(k, -1), attention_mask=am[:1].expand(k, -1), pixel_values=pixels[e]
            ).image_embeds
        )
        txt_emb.append(
            itc_model(input_ids=ids[e], attention_mask=am[e], pixel_values=pixels[:1].expand(k, -1, -1, -1)).text_embeds
        )
    sims = torch.cat(txt_emb) @ torch.cat(img_emb).T
    top = sims.topk(min(shortlist, n), dim=1).indices  # (n, N)
    q = torch.arange(n).repeat_interleave(top.shape[1])
    c = top.reshape(-1)
    scores = torch.cat(
        [itm_fn(ids[q[s : s + 512]], am[q[s : s + 512]], pixels[c[s : s + 512]]) for s in range(0, len(q), 512)]
    )
    scores = scores.view(n, -1)
    itc_ranked = [row.tolist() for row in top]
    itm_ranked = [rerank(row.tolist(), sc.tolist()) for row, sc in zip(top, scores)]
    truth = list(range(n))
    return {"shortlist": recall_at_k(ranks_of(itc_ranked, truth)), "rerank": recall_at_k(ranks_of(itm_ranked, truth))}


@torch.no_grad()
def group_accuracy(itc_model, itm_fn, tokenizer, pixels, captions, groups: list[list[int]]) -> dict[str, float]:
    """Binding/order skill alone: how often each scorer ranks a caption's image first among its group of four."""
    ids, am = encode_texts(tokenizer, captions)
    out = itc_model(input_ids=ids, attention_mask=am, pixel_values=pixels)
    sims = out.text_embeds @ out.image_embeds.T  # diagonal blocks are what we need; pairs within a group
    itc_hits = itm_hits = total = 0
    for g in groups:
        gi = torch.tensor(g)
        q = gi.repeat_interleave(len(g))
        c = gi.repeat(len(g))
        scores = itm_fn(ids[q], am[q], pixels[c]).view(len(g), len(g))
        itm_hits += (scores.argmax(1) == torch.arange(len(g))).sum().item()
        total += len(g)
    # ITC similarities need each image's embedding, which depends on the image alone: take it from any pairing
    img = torch.cat(
        [
            itc_model(
                input_ids=ids[:1].expand(len(g), -1),
                attention_mask=am[:1].expand(len(g), -1),
                pixel_values=pixels[torch.tensor(g)],
            ).image_embeds
            for g in groups
        ]
    )
    order = torch.tensor([i for g in groups for i in g])
    txt = out.text_embeds[order]
    for k, g in enumerate(groups):
        block = txt[4 * k : 4 * k + 4] @ img[4 * k : 4 * k + 4].T
        itc_hits += (block.argmax(1) == torch.arange(len(g))).sum().item()
    del sims
    return {"itc": itc_hits / total, "itm": itm_hits / total}


def fmt(metrics: dict[str, dict[int, float]]) -> str:
    return "  ".join(f"{name} " + "/".join(f"{v:.3f}" for v in m.values()) for name, m in metrics.items())


# ---------------------------------------------------------------- training


def text_mask(bt, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The extended text mask exactly as BridgeTowerModel.forward builds it."""
    from transformers.masking_utils import create_bidirectional_mask

    embeds = bt.text_model.embeddings(input_ids=input_ids[:, :1])
    return create_bidirectional_mask(config=bt.config, inputs_embeds=embeds, attention_mask=attention_mask)


def text_states(bt, input_ids: torch.Tensor, mask) -> list[torch.Tensor]:
    """Per-layer text-tower states (embeddings, then each layer), as in BridgeTowerModel.forward."""
    h = bt.text_model.embeddings(input_ids=input_ids)
    states = [h]
    for layer in bt.text_model.encoder.layer:
        h = layer(h, mask)
        states.append(h)
    return states


def fuse(bt, text_states, image_states, mask, t_idx: torch.Tensor, i_idx: torch.Tensor) -> torch.Tensor:
    """pooler_output of BridgeTowerModel for the pairs (text t_idx[k], image i_idx[k]), cross-modal part only.

    `text_states` / `image_states` are the per-layer unimodal states of a forward over the batch
    (``outputs.hidden_states[0]`` / ``[1]``): they depend on one modality each, so a re-pairing only needs
    the fusion layers. Mirrors BridgeTowerModel.forward (shared transforms, non-shared link towers); checked
    against it by :func:`check_fuse`.
    """
    n_text = len(bt.text_model.encoder.layer)
    split = n_text - bt.config.num_hidden_layers + 1
    visual = bt.vision_model.visual
    m = None if mask is None else mask[t_idx]
    tt = bt.token_type_embeddings.weight
    t = bt.cross_modal_text_transform(text_states[split][t_idx]) + tt[0]
    i = bt.cross_modal_image_transform(visual.forward_post(image_states[split][:, i_idx])) + tt[1]
    ct, ci = bt.cross_modal_text_layernorm(t), bt.cross_modal_image_layernorm(i)
    xt = bt.cross_modal_text_layers[0](ct, ci, attention_mask=m)[0]
    xi = bt.cross_modal_image_layers[0](ci, ct, encoder_attention_mask=m)[0]
    for li, k in enumerate(range(split, n_text)):
        t = bt.cross_modal_text_transform(text_states[k + 1][t_idx]) + tt[0]
        i = bt.cross_modal_image_transform(visual.forward_post(image_states[k + 1][:, i_idx])) + tt[1]
        ct = bt.cross_modal_text_link_tower[li](t, xt, m)
        ci = bt.cross_modal_image_link_tower[li](i, xi, None)
        xt = bt.cross_modal_text_layers[li + 1](ct, ci, attention_mask=m)[0]
        xi = bt.cross_modal_image_layers[li + 1](ci, ct, encoder_attention_mask=m)[0]
    return bt.get_cls_features(xt, xi)


@torch.no_grad()
def check_fuse(itc_model, ids, am, pixels) -> None:
    """fuse() on re-paired inputs must equal the HF forward on the same pairs."""
    was = itc_model.training
    itc_model.eval()
    out = itc_model(input_ids=ids, attention_mask=am, pixel_values=pixels)
    t_idx = torch.arange(len(ids)).roll(1)
    i_idx = torch.arange(len(ids)).flip(0)
    got = fuse(
        itc_model.bridgetower,
        out.hidden_states[0],
        out.hidden_states[1],
        text_mask(itc_model.bridgetower, ids, am),
        t_idx,
        i_idx,
    )
    want = itc_model.bridgetower(
        input_ids=ids[t_idx], attention_mask=am[t_idx], pixel_values=pixels[i_idx]
    ).pooler_output
    mine = text_states(itc_model.bridgetower, ids, text_mask(itc_model.bridgetower, ids, am))
    itc_model.train(was)
    if not torch.allclose(got, want, atol=1e-5):
        raise SystemExit(f"fusion-only path differs from BridgeTowerModel.forward by {(got - want).abs().max():.2e}")
    for a, b in zip(mine, out.hidden_states[0]):
        if not torch.allclose(a * am[..., None], b * am[..., None], atol=1e-5):
            raise SystemExit("text tower states differ from BridgeTowerModel.forward")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(args, work: Path):
    from transformers import BridgeTowerForContrastiveLearning
    from transformers.models.bridgetower.modeling_bridgetower import BridgeTowerITMHead

    tokenizer = train_bpe_tokenizer(demo_data.all_captions(), work / "tokenizer", vocab_size=args.vocab)
    config = tiny_config(
        hidden_size=args.hidden,
        text_layers=args.layers,
        vision_layers=args.layers,
        cross_layers=args.cross_layers,
        heads=args.heads,
        image_size=demo_data.IMAGE_SIZE,
        patch_size=args.patch,
        vocab_size=len(tokenizer),
        contrastive_hidden_size=args.embed,
        max_position_embeddings=MAX_TEXT_LEN + 8,
    )
    set_seed(args.seed)
    itc_model = BridgeTowerForContrastiveLearning(config)
    itm_head = BridgeTowerITMHead(config.hidden_size * 2)
    torch.nn.init.normal_(itm_head.fc.weight, std=0.05)
    torch.nn.init.zeros_(itm_head.fc.bias)
    return tokenizer, config, itc_model, itm_head


def check_processor(out: Path, mean, std) -> None:
    """The saved processor must give exactly the tensors we train on (and ids equal to our tokenizer's)."""
    from transformers import BridgeTowerProcessor

    proc = BridgeTowerProcessor.from_pretrained(str(out))
    rng = np.random.Generator(np.random.PCG64(0))
    scenes = [demo_data.random_scene(rng) for _ in range(8)]
    imgs = [demo_data.render(s) for s in scenes]
    got = proc(images=imgs, text=[s.caption for s in scenes], padding=True, return_tensors="pt")
    diff = (got["pixel_values"] - pixel_tensor(imgs, mean, std)).abs().max().item()
    if diff > 1e-5 or not bool(got["pixel_mask"].all()):
        raise SystemExit(f"processor tensors differ from training tensors (max diff {diff})")


def train(args, tokenizer, itc_model, itm_head, val) -> dict:
    mean, std = args.mean, args.std
    params = list(itc_model.parameters()) + list(itm_head.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    warm = max(1, int(0.05 * args.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    captured = {}
    hook = itc_model.bridgetower.register_forward_hook(lambda m, i, o: captured.__setitem__("pooled", o.pooler_output))
    gen = torch.Generator().manual_seed(args.seed)
    batches = demo_data.training_batches(args.seed, args.batch_size, group_fraction=args.group_fraction)
    rng = np.random.Generator(np.random.PCG64(args.seed + 2))  # false captions
    probe = demo_data.sample_set(args.seed + 1, n_groups=2, n_counts=0)
    check_fuse(
        itc_model,
        *encode_texts(tokenizer, [s.caption for s in probe]),
        pixel_tensor([demo_data.render(s) for s in probe], mean, std),
    )
    itc_model.train()
    t0 = time.time()
    log = []
    for step in range(1, args.steps + 1):
        with uncluttered(step <= args.clean_steps):
            scenes = next(batches)
        pixels = pixel_tensor([demo_data.render(s) for s in scenes], mean, std)
        b = len(scenes)
        false = [demo_data.false_caption(rng, s) for s in scenes] if args.false_captions else []
        all_ids, all_am = encode_texts(tokenizer, [s.caption for s in scenes] + false)  # one padded length
        ids, am = all_ids[:b], all_am[:b]
        out = itc_model(input_ids=ids, attention_mask=am, pixel_values=pixels, return_loss=True)
        pooled_pos = captured["pooled"]
        with torch.no_grad():  # ALBEF hard negatives: sample by in-batch similarity, never the positive
            sim = out.text_embeds @ out.image_embeds.T * itc_model.logit_scale.exp()
            eye = torch.eye(b, dtype=torch.bool)
            # curriculum: start from uniform (easy) negatives, end mostly on ITC-hard ones
            alpha = max(args.easy_min, 1.0 - step / max(1.0, args.easy_steps * args.steps))
            uniform = (~eye).float() / (b - 1)
            w_t2i = (1 - alpha) * F.softmax(sim.float(), dim=1).masked_fill(eye, 0) + alpha * uniform + 1e-9 * (~eye)
            w_i2t = (1 - alpha) * F.softmax(sim.T.float(), dim=1).masked_fill(eye, 0) + alpha * uniform + 1e-9 * (~eye)
            k = args.itm_negatives  # per direction, drawn without replacement
            neg_img = torch.multinomial(w_t2i, k, generator=gen).T.reshape(-1)
            neg_txt = torch.multinomial(w_i2t, k, generator=gen).T.reshape(-1)
        # negatives re-pair this batch's texts and images: reuse its unimodal states, run the fusion only
        bt = itc_model.bridgetower
        ar = torch.arange(b).repeat(k)
        t_idx, i_idx = torch.cat([ar, neg_txt]), torch.cat([neg_img, ar])
        t_states, mask = out.hidden_states[0], text_mask(bt, all_ids, all_am)
        if false:  # plus each image with a near-miss caption of its own (colours or objects swapped, ...)
            extra = text_states(bt, all_ids[b:], None if mask is None else mask[b:])
            t_states = [torch.cat([x, y]) for x, y in zip(t_states, extra)]
            t_idx, i_idx = torch.cat([t_idx, torch.arange(b, 2 * b)]), torch.cat([i_idx, torch.arange(b)])
        neg = fuse(bt, t_states, out.hidden_states[1], mask, t_idx, i_idx)
        logits = itm_head(torch.cat([pooled_pos, neg]))
        labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(len(t_idx), dtype=torch.long)])
        loss_itm = F.cross_entropy(logits, labels)
        loss = out.loss + loss_itm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % args.log_every == 0 or step == args.steps:
            itm_acc = (logits.argmax(1) == labels).float().mean().item()
            line = (
                f"step {step:5d}  itc {out.loss.item():.3f}  itm {loss_itm.item():.3f}  itm_acc {itm_acc:.3f}  "
                f"scale {itc_model.logit_scale.exp().item():.1f}  {time.time() - t0:.0f}s"
            )
            if val is not None and (step % args.eval_every == 0 or step == args.steps):
                itc_model.eval()
                fn = lambda i, a, p: itm_score(itc_model, itm_head, i, a, p)  # noqa: E731
                m = evaluate(itc_model, fn, tokenizer, *val[:2])
                ga = group_accuracy(itc_model, fn, tokenizer, *val)
                itc_model.train()
                line += "  val " + fmt(m) + f"  group itc {ga['itc']:.2f} itm {ga['itm']:.2f}"
            print(line, flush=True)
            log.append(line)
    hook.remove()
    itc_model.eval()
    return {"train_seconds": time.time() - t0, "log": log}


@contextmanager
def uncluttered(active: bool):
    """Scenes drawn inside have no distractor objects (curriculum: learn binding on clean scenes first)."""
    saved = demo_data.PAIR_DISTRACTORS, demo_data.COUNT_DISTRACTORS
    if active:
        demo_data.PAIR_DISTRACTORS, demo_data.COUNT_DISTRACTORS = (0,), (0,)
    try:
        yield
    finally:
        demo_data.PAIR_DISTRACTORS, demo_data.COUNT_DISTRACTORS = saved


def itm_score(itc_model, itm_head, ids, am, pixels) -> torch.Tensor:
    pooled = itc_model.bridgetower(input_ids=ids, attention_mask=am, pixel_values=pixels).pooler_output
    return itm_head(pooled).softmax(-1)[:, 1]


# ---------------------------------------------------------------- final check + model card


def load_sample_set(folder: Path) -> tuple[list[Image.Image], list[str]]:
    captions = read_captions(folder / "captions.csv")
    return [Image.open(c.path).convert("RGB") for c in captions], [c.text for c in captions]


@torch.no_grad()
def final_eval(out: Path, images_dir: Path, shortlist: int, itc_model, itm_head) -> tuple[dict, list[str]]:
    """Reload the checkpoint the way users will (HF classes + saved processor) and evaluate on the sample set."""
    from transformers import (
        BridgeTowerForContrastiveLearning,
        BridgeTowerForImageAndTextRetrieval,
        BridgeTowerProcessor,
    )

    itc = BridgeTowerForContrastiveLearning.from_pretrained(str(out)).eval()
    ret = BridgeTowerForImageAndTextRetrieval.from_pretrained(str(out)).eval()
    proc = BridgeTowerProcessor.from_pretrained(str(out))
    images, captions = load_sample_set(images_dir)
    pixels = proc(images=images, return_tensors="pt")["pixel_values"]
    # the reloaded ITM model must score exactly like the trained backbone + head
    ids, am = encode_texts(proc.tokenizer, captions[:4])
    a = ret(input_ids=ids, attention_mask=am, pixel_values=pixels[:4]).logits.softmax(-1)[:, 1]
    b = itm_score(itc_model, itm_head, ids, am, pixels[:4])
    if not torch.allclose(a, b, atol=1e-5):
        raise SystemExit(f"reloaded ITM scores differ: {a} vs {b}")

    def itm_fn(i, m, p):
        return ret(input_ids=i, attention_mask=m, pixel_values=p).logits.softmax(-1)[:, 1]

    return evaluate(itc, itm_fn, proc.tokenizer, pixels, captions, shortlist=shortlist), captions


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


CARD = """---
license: apache-2.0
library_name: transformers
tags: [bridgetower, toy, synthetic, image-text-retrieval]
---

# bt-search demo model (toy BridgeTower)

A **toy** BridgeTower trained from scratch in minutes on a CPU, on synthetic images of coloured shapes
(circles, squares, triangles, stars, crosses in red, green, blue, yellow, purple) with captions like
"a red circle left of a blue square" or "three green triangles". It exists so that bt-search can be tried,
tested and demonstrated without downloading weights. **It knows nothing about real photos**: use a real
BridgeTower checkpoint (e.g. `BridgeTower/bridgetower-large-itm-mlm-itc`) for those.

One checkpoint holds the backbone, the ITC heads and the ITM head, in the hub's key names, so it loads with
`BridgeTowerForContrastiveLearning.from_pretrained`, `BridgeTowerForImageAndTextRetrieval.from_pretrained`
(which picks up `itm_score.*`) and `BridgeTowerProcessor.from_pretrained`.

## How it was made

```
{command}
```

- Code: `scripts/train_demo_model.py` (training + this card), data generator `bt_search_dev/demo_data.py`.
- Seed {seed}; training data: an endless, deterministic stream of rendered scenes from that seed, {batch} per
  batch, about three quarters of each batch in "confusable groups" (four images with the same colours, shapes
  and axis, differing in which colour goes with which shape and which comes first), the rest random pairs and
  count scenes. {steps} steps ({images} images seen). Images are {size}x{size} RGB, drawn at the model's size.
{curriculum}- Losses: the contrastive model's own ITC loss (`return_loss=True`) + ITM cross-entropy on the same
  backbone's `pooler_output`, with one negative image and one negative text per pair sampled by softmax of
  the batch's ITC similarities (positive excluded), ALBEF/BridgeTower-style, drawn uniformly at first and
  mostly by similarity later; plus, per image, a near-miss caption that is false of it (colours swapped
  between the shapes, the objects swapped, or the other axis; for counts another number or colour).
- AdamW, lr {lr}, 5% warm-up then cosine decay, weight decay 0.01, grad-norm clip 1.0, batch {batch}.
- Sizes: hidden {hidden}, text layers {layers}, vision layers {layers}, cross-modal layers {cross},
  text/cross-modal heads {heads}, patch {patch} ({patches} patches), ITC embedding {embed}, byte-level BPE
  vocabulary {vocab} (trained on the generator's captions), max text length {max_len}. {params:,} parameters;
  {mb:.1f} MB on disk.
- Wall time: {train_s:.0f} s training ({total_s:.0f} s for the whole script) on {machine}.

## Measured retrieval (held-out sample set)

`sample_data/images/` ({n} images, made by `scripts/make_sample_images.py` with another seed). Each caption has
exactly one true image; {groups} confusable groups of four plus count scenes ("two/three ..."). Text->image:
ITC cosine shortlist of N={shortlist}, then ITM score (softmax of the ITM logits, class 1) over the shortlist.

| ranking | R@1 | R@5 | R@10 |
|---|---|---|---|
| ITC shortlist only | {s1:.3f} | {s5:.3f} | {s10:.3f} |
| ITC top-{shortlist} + ITM rerank | {r1:.3f} | {r5:.3f} | {r10:.3f} |

ITM rerank minus shortlist, R@1: {margin:+.3f}. Measured by the training script right after saving, through
the reloaded HF classes and saved processor. `bt-search eval sample_data/images/captions.csv --shortlist
{shortlist}` over an index of the sample set measures the same protocol through bt-search's own fast paths;
its output ships as `eval.json`, and `tests/e2e/test_demo_model.py` re-measures it in CI.

## License

Apache-2.0, like bt-search. Weights, tokenizer and data are all produced by this repository's code; no
third-party weights or data are included.
"""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="held-out sample set (captions.csv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--cross-layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2, help="attention heads of the text and cross-modal layers")
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--vocab", type=int, default=400)
    p.add_argument("--itm-negatives", type=int, default=1, help="ITM negatives per pair and direction")
    p.add_argument("--clean-steps", type=int, default=0, help="first steps on scenes without distractor objects")
    p.add_argument("--group-fraction", type=float, default=0.75, help="share of each batch in confusable groups")
    p.add_argument("--false-captions", type=int, default=1, help="1: add a near-miss caption per image as ITM negative")
    p.add_argument("--phrasing", choices=["both", "forward"], default="both", help="relation words used in captions")
    p.add_argument("--easy-min", type=float, default=0.3, help="final share of uniformly drawn ITM negatives")
    p.add_argument(
        "--easy-steps", type=float, default=0.4, help="fraction of training over which that share falls from 1"
    )
    p.add_argument("--shortlist", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--no-card", action="store_true", help="skip the sample-set evaluation and the model card")
    args = p.parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    if args.hidden % 64:
        p.error("--hidden must be a multiple of 64 (the vision tower uses 64-dim heads)")

    if args.phrasing == "forward":
        demo_data.PHRASINGS = {"h": ("left of",), "v": ("above",)}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, config, itc_model, itm_head = build(args, Path(tmp))
    # save once up front: the processor we train against is the one that ships
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        args.out,
        merged_state_dict(itc_model, itm_head),
        config,
        tokenizer,
        layout="transformers",
        max_text_len=MAX_TEXT_LEN,
    )
    from transformers import BridgeTowerProcessor

    ip = BridgeTowerProcessor.from_pretrained(str(args.out)).image_processor
    args.mean, args.std = list(ip.image_mean), list(ip.image_std)
    check_processor(args.out, args.mean, args.std)

    val_scenes = demo_data.sample_set(VAL_SEED, n_groups=30, n_counts=20)
    bags: dict = {}
    for k, sc in enumerate(val_scenes):
        if sc.kind == "pair":
            axis, a, b = sc.key
            bags.setdefault((axis, frozenset({a[0], b[0]}), frozenset({a[1], b[1]})), []).append(k)
    val = (
        pixel_tensor([demo_data.render(s) for s in val_scenes], args.mean, args.std),
        [s.caption for s in val_scenes],
        [g for g in bags.values() if len(g) == 4],
    )
    info = train(args, tokenizer, itc_model, itm_head, val)
    save_checkpoint(
        args.out,
        merged_state_dict(itc_model, itm_head),
        config,
        tokenizer,
        layout="transformers",
        max_text_len=MAX_TEXT_LEN,
    )
    print(f"saved {args.out} ({dir_size(args.out) / 1e6:.1f} MB), training {info['train_seconds']:.0f}s")
    if args.no_card:
        return 0
    if not (args.images / "captions.csv").exists():
        print(f"no {args.images / 'captions.csv'}: run scripts/make_sample_images.py first", file=sys.stderr)
        return 1
    metrics, captions = final_eval(args.out, args.images, args.shortlist, itc_model, itm_head)
    n = len(captions)
    print("sample set " + fmt(metrics))
    s, r = metrics["shortlist"], metrics["rerank"]
    command = "python scripts/make_sample_images.py\npython scripts/train_demo_model.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    card = CARD.format(
        command=command.rstrip(),
        seed=args.seed,
        curriculum=(
            f"- Curriculum: the first {args.clean_steps} steps draw scenes without distractor objects, so "
            "attribute binding is learnt on clean scenes; the rest have the generator's usual 0-2 "
            "unmentioned objects.\n"
        )
        if args.clean_steps
        else "",
        batch=args.batch_size,
        steps=args.steps,
        images=args.steps * args.batch_size,
        size=demo_data.IMAGE_SIZE,
        lr=args.lr,
        hidden=args.hidden,
        layers=args.layers,
        cross=args.cross_layers,
        heads=args.heads,
        patch=args.patch,
        patches=(demo_data.IMAGE_SIZE // args.patch) ** 2,
        embed=args.embed,
        vocab=len(tokenizer),
        max_len=MAX_TEXT_LEN,
        params=sum(t.numel() for t in merged_state_dict(itc_model, itm_head).values()),
        mb=dir_size(args.out) / 1e6,
        train_s=info["train_seconds"],
        total_s=time.time() - t_start,
        machine=f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {args.threads} threads",
        n=n,
        groups=sum(1 for c in captions if " of " in c or "above" in c or "below" in c) // 4,
        shortlist=args.shortlist,
        s1=s[1],
        s5=s[5],
        s10=s[10],
        r1=r[1],
        r5=r[5],
        r10=r[10],
        margin=r[1] - s[1],
    )
    (args.out / "README.md").write_text(card, encoding="utf-8")
    (args.out / "metrics.json").write_text(
        json.dumps(
            {
                "sample_set_images": n,
                "shortlist_n": args.shortlist,
                **{k: {f"R@{kk}": vv for kk, vv in v.items()} for k, v in metrics.items()},
                "train_seconds": round(info["train_seconds"], 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
