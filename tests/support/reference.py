"""The HF reference path (the oracle): BridgeTowerProcessor + the HF BridgeTower classes, as their docs use them."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def reference_processor(checkpoint: Path):
    """BridgeTowerProcessor for a checkpoint; for hub-layout ones, crop set to the model's image size.

    The stock processor reads a bare hub preprocessor_config as crop 288, which no tiny model takes (trap 1 of
    the core issue), so the oracle is given the crop the model needs, as our loader does.
    """
    from transformers import BridgeTowerConfig, BridgeTowerImageProcessorPil, BridgeTowerProcessor, RobertaTokenizerFast

    if (checkpoint / "processor_config.json").is_file():
        return BridgeTowerProcessor.from_pretrained(str(checkpoint))
    bare = json.loads((checkpoint / "preprocessor_config.json").read_text())
    image_size = BridgeTowerConfig.from_pretrained(str(checkpoint)).vision_config.image_size
    image_processor = BridgeTowerImageProcessorPil(
        size={"shortest_edge": bare["size"]}, crop_size={"shortest_edge": image_size}
    )
    return BridgeTowerProcessor(
        image_processor=image_processor, tokenizer=RobertaTokenizerFast.from_pretrained(str(checkpoint))
    )


def reference_models(checkpoint: Path):
    from transformers import BridgeTowerForContrastiveLearning, BridgeTowerForImageAndTextRetrieval
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    contrastive = BridgeTowerForContrastiveLearning.from_pretrained(str(checkpoint)).eval()
    retrieval = BridgeTowerForImageAndTextRetrieval.from_pretrained(str(checkpoint)).eval()
    return contrastive, retrieval


@torch.inference_mode()
def reference_embeddings(checkpoint: Path, images, texts):
    """(image_embeds, text_embeds) from BridgeTowerForContrastiveLearning on processor output, batched."""
    processor = reference_processor(checkpoint)
    contrastive, _ = reference_models(checkpoint)
    pairs = max(len(images), len(texts))
    images = (images * pairs)[:pairs]
    texts = (texts * pairs)[:pairs]
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    out = contrastive(**inputs)
    return out.image_embeds.numpy(), out.text_embeds.numpy()


@torch.inference_mode()
def reference_itm(checkpoint: Path, images, text: str):
    """softmax(BridgeTowerForImageAndTextRetrieval(...).logits)[:, 1] for one text against each image."""
    processor = reference_processor(checkpoint)
    _, retrieval = reference_models(checkpoint)
    inputs = processor(images=images, text=[text] * len(images), padding=True, return_tensors="pt")
    return torch.softmax(retrieval(**inputs).logits, dim=-1)[:, 1].numpy()
