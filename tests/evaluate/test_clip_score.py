"""CLIP score against transformers: a small random CLIPModel and a word-level
tokenizer.json saved as a Hugging Face directory; the score is the mean cosine of
transformers' image and text features for the same images and captions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imagen_jax.evaluate.clip_score import clip_score, load_clip_for_scoring, score_folder

WORDS = ["<pad>", "<|startoftext|>", "a", "red", "blue", "circle", "square", "<|endoftext|>"]


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel

    directory = tmp_path_factory.mktemp("hf_clip")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=8, eos_token_id=7, bos_token_id=1,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, image_size=16, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 7)])
    tok.save(str(directory / "tokenizer.json"))
    return model, directory


def test_clip_score_is_transformers_mean_cosine(hf_clip, tmp_path):
    import torch

    from imagen_jax.sample_cascade import write_captioned_pngs
    from unclip_jax.clip import OPENAI_MEAN, OPENAI_STD

    model, directory = hf_clip
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    prompts = ["a red circle", "a blue square", "a red square"]
    ids = np.array([[1, 2, 3, 5, 7, 0, 0, 0], [1, 2, 4, 6, 7, 0, 0, 0],
                    [1, 2, 3, 6, 7, 0, 0, 0]])
    with torch.no_grad():
        pixels = ((images + 1) / 2 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
        z_i = model.get_image_features(pixel_values=torch.from_numpy(
            pixels.transpose(0, 3, 1, 2).astype(np.float32))).pooler_output.numpy()
        z_t = model.get_text_features(input_ids=torch.from_numpy(ids),
                                      attention_mask=torch.from_numpy(
                                          (ids != 0).astype(np.int64))).pooler_output.numpy()
    cos = np.sum(z_i * z_t, -1) / np.linalg.norm(z_i, axis=-1) / np.linalg.norm(z_t, axis=-1)
    result = clip_score(load_clip_for_scoring(str(directory)), images, prompts)
    np.testing.assert_allclose(result["per_image"], cos, atol=1e-4)
    assert result["clip_score"] == pytest.approx(float(cos.mean()), abs=1e-4)
    # The CLI's path: a folder of captioned PNGs (pixels rounded to uint8, so looser).
    write_captioned_pngs(images, prompts, str(tmp_path / "pngs"))
    folder = score_folder(str(tmp_path / "pngs"), str(directory))
    assert folder["clip_score"] == pytest.approx(float(cos.mean()), abs=2e-2)
    assert json.dumps(folder)  # JSON-serialisable, as --out writes it
    with pytest.raises(ValueError, match="3 images for 2 prompts"):
        clip_score(load_clip_for_scoring(str(directory)), images, prompts[:2])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_clip_for_scoring(str(tmp_path))
