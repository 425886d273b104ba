"""CLIP conversion parity: a small random Hugging Face `CLIPModel` (built here, saved as
safetensors) and our Flax CLIP give the same image and text embeddings."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from unclip_jax.clip import CLIP, OPENAI_MEAN, OPENAI_STD, contrastive_loss
from unclip_jax.clip_convert import load_clip

VOCAB, EOS, MAX_LEN = 99, 98, 12
TOL = 1e-4


def _hf_model(hidden_act: str, seed: int = 0):
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=MAX_LEN, hidden_act=hidden_act,
                         eos_token_id=EOS, bos_token_id=VOCAB - 3, pad_token_id=0),
        vision_config=dict(hidden_size=40, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=5, image_size=24, patch_size=8,
                           hidden_act=hidden_act),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # HF initialises norms to ones/zeros: randomise to catch misplacement
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5) if name.endswith("weight") else param.normal_(0, 0.1)
        model.logit_scale.fill_(3.0)
    return model


@pytest.fixture(scope="module", params=["quick_gelu", "gelu"])
def converted(request, tmp_path_factory):
    model = _hf_model(request.param)
    directory = tmp_path_factory.mktemp(f"clip-{request.param}")
    model.save_pretrained(directory)
    mean, std = [0.4, 0.45, 0.5], [0.25, 0.3, 0.2]
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": mean, "image_std": std}))
    config, params = load_clip(directory)
    return model, config, params, (np.array(mean), np.array(std))


def _texts():
    """Captions of different lengths, each ending in EOS, right-padded with 0."""
    rng = np.random.default_rng(0)
    lengths = [MAX_LEN, 7, 3, 1]
    ids = np.zeros((len(lengths), MAX_LEN), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n - 1] = rng.integers(1, EOS, n - 1)
        ids[row, n - 1] = EOS
    return ids, ids != 0


def test_image_and_text_embeddings_match_transformers(converted):
    import torch

    model, config, params, (mean, std) = converted
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (3, 24, 24, 3)).astype(np.float32)
    ids, mask = _texts()
    pixels = ((images + 1) / 2 - mean) / std  # what HF's processor would hand the model
    with torch.no_grad():
        t_pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32))
        hf_img = model.get_image_features(pixel_values=t_pixels).pooler_output.numpy()
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))
        hf_txt = model.get_text_features(input_ids=t_ids, attention_mask=t_mask)
        hf_states = hf_txt.last_hidden_state.numpy()
        hf_txt = hf_txt.pooler_output.numpy()
    module = CLIP(config)
    z_i = module.apply({"params": params}, jnp.asarray(images), method=CLIP.encode_image)
    z_t, states = module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                               method=CLIP.encode_text)
    assert z_i.shape == (3, 16) and z_t.shape == (4, 16)
    np.testing.assert_allclose(np.asarray(z_i), hf_img, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(np.asarray(z_t), hf_txt, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(np.asarray(states)[mask], hf_states[mask], atol=TOL, rtol=TOL)
    assert abs(float(params["logit_scale"]) - 3.0) < 1e-6


def test_wrong_shape_and_extra_tensors_are_refused(converted, tmp_path):
    from safetensors.numpy import load_file, save_file

    model, *_ = converted
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    name = "text_model.encoder.layers.1.mlp.fc1.weight"
    bad = dict(weights, **{name: np.zeros((5, 5), np.float32)})
    save_file(bad, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"fc1.weight: expected shape \(48, 32\)"):
        load_clip(tmp_path)
    extra = dict(weights, **{"text_model.encoder.layers.2.mlp.fc1.weight":
                             np.zeros((48, 32), np.float32)})
    save_file(extra, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="does not account for"):
        load_clip(tmp_path)


def test_contrastive_loss_closed_form():
    # Orthonormal pairs: logits = scale * I, so the loss is log(1 + (B-1) e^-scale)
    # both ways, and retrieval is perfect.
    z = jnp.eye(4)
    loss, metrics = contrastive_loss(z, 3.0 * z, jnp.log(2.0))
    np.testing.assert_allclose(float(loss), np.log(1 + 3 * np.exp(-2.0)), rtol=1e-5)
    assert float(metrics["retrieval_accuracy"]) == 1.0
    # Swapping two captions makes those two pairs wrong.
    loss2, m2 = contrastive_loss(z, z[jnp.array([1, 0, 2, 3])], jnp.log(10.0))
    assert float(loss2) > 5.0 and float(m2["retrieval_accuracy"]) == 0.5


def test_hf_tokenizer_json_matches_transformers_and_keeps_eos_last(tmp_path):
    """A tokenizer.json with CLIP's layout (start/end tokens added by a post-processor)
    gives transformers' ids; a long prompt keeps its end token; empty is padding."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from imagen_jax.text.hf_tokenizer import tokenizer_from_dir

    words = ["<pad>", "<s>", "</s>", "a", "red", "blue", "circle", "square", "above", "two"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                       special_tokens=[("<s>", 1), ("</s>", 2)])
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = tokenizer_from_dir(tmp_path, max_length=6)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    batch = ours.encode(["a red circle", "two blue squares above a red circle", ""])
    assert batch.ids[0, :5].tolist() == theirs("a red circle")["input_ids"] == [1, 3, 4, 6, 2]
    assert batch.mask[0].tolist() == [True] * 5 + [False]
    assert batch.truncated.tolist() == [False, True, False]
    assert batch.ids[1].tolist()[-1] == 2 and batch.mask[1].all()  # end token kept last
    assert not batch.mask[2].any()


def _hf_variant(tmp_path, eos_token_id: int, text_eps: float, vision_eps: float):
    """A random CLIPModel with the given EOS id and LayerNorm epsilons, saved and
    converted; returns (model, our config, our params)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=MAX_LEN, eos_token_id=eos_token_id,
                         bos_token_id=VOCAB - 3, pad_token_id=0, layer_norm_eps=text_eps),
        vision_config=dict(hidden_size=40, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=5, image_size=24, patch_size=8,
                           layer_norm_eps=vision_eps),
        projection_dim=16)
    torch.manual_seed(3)
    model = CLIPModel(config).eval()
    model.save_pretrained(tmp_path)
    config, params = load_clip(tmp_path)
    return model, config, params


def _embed(model, config, params, images, ids, mask):
    import torch

    with torch.no_grad():
        pixels = ((images + 1) / 2 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
        t_pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32))
        hf_img = model.get_image_features(pixel_values=t_pixels).pooler_output.numpy()
        hf_txt = model.get_text_features(input_ids=torch.from_numpy(ids),
                                         attention_mask=torch.from_numpy(
                                             mask.astype(np.int64))).pooler_output.numpy()
    module = CLIP(config)
    z_i = module.apply({"params": params}, jnp.asarray(images), method=CLIP.encode_image)
    z_t, _ = module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                          method=CLIP.encode_text)
    return (np.asarray(z_i), np.asarray(z_t)), (hf_img, hf_txt)


def test_layer_norm_eps_is_read_from_config_json(tmp_path):
    """A checkpoint whose LayerNorms use eps 1e-3 (text) and 1e-2 (vision) gives
    transformers' embeddings; the default 1e-5 would be far off (so the test can fail)."""
    model, config, params = _hf_variant(tmp_path, EOS, 1e-3, 1e-2)
    assert (config.text_layer_norm_eps, config.vision_layer_norm_eps) == (1e-3, 1e-2)
    images = np.random.default_rng(4).uniform(-1, 1, (2, 24, 24, 3)).astype(np.float32)
    ids, mask = _texts()
    (z_i, z_t), (hf_img, hf_txt) = _embed(model, config, params, images, ids, mask)
    np.testing.assert_allclose(z_i, hf_img, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(z_t, hf_txt, atol=TOL, rtol=TOL)
    default = dataclasses.replace(config, text_layer_norm_eps=1e-5, vision_layer_norm_eps=1e-5)
    (z_i5, z_t5), _ = _embed(model, default, params, images, ids, mask)
    assert np.abs(z_t5 - hf_txt).max() > 100 * TOL and np.abs(z_i5 - hf_img).max() > 100 * TOL


@pytest.mark.parametrize("eos_token_id", [EOS, 2])
def test_text_pooling_follows_transformers_with_eos_inside_the_caption(tmp_path, eos_token_id):
    """Captions with the EOS id inside them (and, for the legacy eos_token_id 2, a larger
    id after it): the pooled position is transformers' (first EOS, or the largest id)."""
    model, config, params = _hf_variant(tmp_path, eos_token_id, 1e-5, 1e-5)
    assert config.eos_token_id == eos_token_id
    e = eos_token_id
    ids = np.array([[VOCAB - 3, 5, e, 9, 11, e, 0, 0, 0, 0, 0, 0],
                    [VOCAB - 3, e, 7, 90, 4, 6, 8, e, 0, 0, 0, 0],
                    [VOCAB - 3, 5, 6, 7, e, 0, 0, 0, 0, 0, 0, 0]], np.int64)
    mask = ids != 0
    images = np.zeros((1, 24, 24, 3), np.float32)
    (_, z_t), (_, hf_txt) = _embed(model, config, params, images, ids, mask)
    np.testing.assert_allclose(z_t, hf_txt, atol=TOL, rtol=TOL)
    # The last valid position (the old rule) pools something else for the first two rows.
    last = CLIP(dataclasses.replace(config, eos_token_id=None))
    z_last, _ = last.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                           method=CLIP.encode_text)
    assert np.abs(np.asarray(z_last)[:2] - hf_txt[:2]).max() > 100 * TOL


def test_prompt_text_never_becomes_a_special_token(tmp_path):
    """'<|endoftext|>' typed in a prompt is text: the only special tokens are the ones
    the post-processor adds, so EOS is pooled at the caption's end."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from imagen_jax.text.hf_tokenizer import tokenizer_from_dir

    words = ["<pad>", "<|startoftext|>", "<|endoftext|>", "a", "red", "circle", "<", "|",
             "endoftext", ">", "<|", "|>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 2)])
    tok.save(str(tmp_path / "tokenizer.json"))
    assert 2 in tok.encode("a red <|endoftext|> circle").ids[1:-1]  # the library's default
    batch = tokenizer_from_dir(tmp_path, max_length=12).encode(["a red <|endoftext|> circle"])
    row = batch.ids[0][batch.mask[0]].tolist()
    assert row[0] == 1 and row[-1] == 2
    assert 1 not in row[1:-1] and 2 not in row[1:-1], row
