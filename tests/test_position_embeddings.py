"""The ViT's resized position embeddings are computed once per input size and kept (they were a
quarter of the fast path's model pass on a GPU), and never served stale."""

from __future__ import annotations

import torch

from image_to_3d_dev.paths import TINY_MODEL
from remote.triposr.config import ViTConfig
from remote.triposr.vit import ViTEmbeddings
from remote.triposr.weights import load_model


def embeddings() -> ViTEmbeddings:
    torch.manual_seed(0)
    module = ViTEmbeddings(ViTConfig(hidden_size=8, image_size=224, patch_size=16))
    with torch.no_grad():
        module.position_embeddings.normal_()
    return module.requires_grad_(False)


def test_the_resize_is_kept_per_size_and_equals_computing_it_again() -> None:
    module = embeddings()
    first = module.resized_position_embeddings(64, 64)

    assert module.resized_position_embeddings(64, 64) is first
    assert torch.equal(first, module._resize_position_embeddings(64, 64))
    assert first.shape == (1, 17, 8)
    other = module.resized_position_embeddings(96, 96)
    assert other.shape == (1, 37, 8) and torch.equal(other, module._resize_position_embeddings(96, 96))


def test_changed_weights_are_resized_again() -> None:
    module = embeddings()
    before = module.resized_position_embeddings(64, 64).clone()
    with torch.no_grad():
        module.position_embeddings.mul_(2)

    after = module.resized_position_embeddings(64, 64)

    assert torch.allclose(after, 2 * before)
    module.load_state_dict({k: torch.zeros_like(v) for k, v in module.state_dict().items()})
    assert module.resized_position_embeddings(64, 64).abs().max() == 0


def test_in_inference_mode_the_kept_resize_is_used_and_outside_it_too() -> None:
    module = embeddings()
    with torch.inference_mode():
        inside = module.resized_position_embeddings(64, 64)
    outside = module.resized_position_embeddings(64, 64)

    assert outside is inside and not inside.is_inference()


def test_gradients_still_reach_the_embeddings_while_training() -> None:
    module = embeddings().requires_grad_(True)
    module.resized_position_embeddings(64, 64).sum().backward()

    assert module.position_embeddings.grad is not None and module.position_embeddings.grad.abs().sum() > 0


def test_loaded_weights_are_plain_tensors_so_the_pipeline_keeps_the_resize() -> None:
    model = load_model(TINY_MODEL, device="cpu")
    vit = model.image_tokenizer.model.embeddings
    size = model.config.cond_image_size

    with torch.inference_mode():
        first = vit.resized_position_embeddings(size, size)
        assert vit.resized_position_embeddings(size, size) is first
