"""A textured GLB's core: UV atlas, TripoSR's colour field baked into it (see bake.py)."""

from remote.texture.bake import TEXTURE_SIZES, TexturedMesh, bake_texture, check_texture_size

__all__ = ["TEXTURE_SIZES", "TexturedMesh", "bake_texture", "check_texture_size"]
