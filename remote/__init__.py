"""image-to-3d: everything that runs next to the GPU."""
